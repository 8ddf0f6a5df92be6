// Kubernetes name formats (k8s.io/apimachinery/pkg/util/validation), with the server's messages.

const DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN = `${DNS1123_LABEL}(\\.${DNS1123_LABEL})*`;
const DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?";

/** validation.RegexError: the message, examples, and the regex in the server's words. */
function regexError(message: string, format: string, ...examples: string[]): string {
  const shown = examples.map((example) => `'${example}', `).join("or ");
  return `${message} (e.g. ${shown}regex used for validation is '${format}')`;
}

/** IsDNS1123Subdomain: object names, API groups. */
export function dns1123SubdomainErrors(value: string): string[] {
  const errors: string[] = [];
  if (value.length > 253) errors.push("must be no more than 253 characters");
  if (!new RegExp(`^${DNS1123_SUBDOMAIN}$`).test(value)) {
    const message =
      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
    errors.push(regexError(message, DNS1123_SUBDOMAIN, "example.com"));
  }
  return errors;
}

/** IsDNS1035Label: resource names (plural, singular, short names, kinds), version names. */
export function dns1035LabelErrors(value: string): string[] {
  const errors: string[] = [];
  if (value.length > 63) errors.push("must be no more than 63 characters");
  if (!new RegExp(`^${DNS1035_LABEL}$`).test(value)) {
    const message =
      "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
    errors.push(regexError(message, DNS1035_LABEL, "my-name", "abc-123"));
  }
  return errors;
}
