// Test helpers of @darkbloom/coordinator (its "./testing" export): a throwaway PostgreSQL, a
// coordinator on a free port with a funded account, an AdminService over a test database. Tests and
// benchmarks import them from "@darkbloom/coordinator/testing"; nothing in production does.
export { type AdminTestServer, startAdminTestServer } from "./admin-test-server.js";
export { type AttachedTrust, attachTrust } from "./attached-trust.js";
export {
  ledgerBalance,
  ledgerBalanced,
  type ReservationRow,
  reservationRow,
  settledReservation,
} from "./ledger-queries.js";
export {
  type AnyJson,
  adminClient,
  postJson,
  readJson,
  startTestCoordinator,
  TEST_ADMIN_KEY,
  type TestCoordinator,
  waitFor,
} from "./test-coordinator.js";
export {
  createTestDatabase,
  startTestPostgres,
  type TestDatabase,
  type TestPostgres,
} from "./test-database.js";
