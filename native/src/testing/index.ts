export {
  FakeKeychain,
  type FakeKeychainOptions,
  type InjectedResult,
  type PrimitiveName,
  type StoredKey,
} from "./fake-keychain.js";
