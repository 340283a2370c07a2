/**
 * What each diagnostic code means and what to do about it, for SARIF rules (`help`, shown by code scanning
 * next to every alert) and for anyone reading a code they do not know. `helpUri` points at the specification
 * or reference the rule enforces. Typed over every code, so a new code does not compile without its help.
 */
import type { Code } from '../diagnostics.ts';

const SPIFFE_ID = 'https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md';
const YAML = 'https://yaml.org/spec/1.2.2/';
const K8S_OBJECTS = 'https://kubernetes.io/docs/concepts/overview/working-with-objects/';
const FIELD_VALIDATION = 'https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation';
const RIPTIDES = 'https://docs.riptides.io';

export const RULE_HELP: Record<Code, { help: string; helpUri: string }> = {
  RT001: {
    help: 'The file is larger than the per-file cap, so nothing in it was read. Split it, or raise the cap with --max-file-size if it really is policy.',
    helpUri: 'https://cwe.mitre.org/data/definitions/400.html',
  },
  RT002: {
    help: 'The file is not valid UTF-8, so nothing in it was read. Re-encode it as UTF-8.',
    helpUri: `${YAML}#52-character-encodings`,
  },
  RT003: {
    help: 'The YAML cannot be parsed here (syntax, or a duplicate key in one mapping). Fix it at the position shown.',
    helpUri: YAML,
  },
  RT004: {
    help: 'Aliases in this file would expand to far more nodes than it holds (a "billion laughs" alias bomb), so it was refused before anything was expanded. Write the values out.',
    helpUri: 'https://en.wikipedia.org/wiki/Billion_laughs_attack',
  },
  RT005: {
    help: 'A symbolic link points outside the repository; it is not followed. Copy the file into the repository instead.',
    helpUri: 'https://cwe.mitre.org/data/definitions/59.html',
  },
  RT006: {
    help: 'A YAML document is not a mapping, so it cannot be a resource. Every document needs apiVersion, kind, metadata and spec.',
    helpUri: K8S_OBJECTS,
  },
  RT007: {
    help: 'The file could not be read, or nests deeper than any policy does. Check permissions and indentation.',
    helpUri: 'https://cwe.mitre.org/data/definitions/674.html',
  },
  RT008: {
    help: 'The file has more diagnostics than are shown for one file (100); this one counts the rest, and is an error when any of them is. Fix the ones shown and run again.',
    helpUri: 'https://cwe.mitre.org/data/definitions/400.html',
  },
  RT010: {
    help: 'The kind or apiVersion is not one this product reconciles. Check the spelling; control-plane kinds (Daemon, JoinToken, …) are ignored with a warning.',
    helpUri: K8S_OBJECTS,
  },
  RT011: {
    help: 'The document has no kind. Add apiVersion and kind.',
    helpUri: K8S_OBJECTS,
  },
  RT020: {
    help: 'The field is not part of this kind; typos must not pass silently. Use the suggested name, or remove the field. YAML merge keys (<<) are not supported.',
    helpUri: FIELD_VALIDATION,
  },
  RT021: {
    help: 'A required field is missing. Add it.',
    helpUri: FIELD_VALIDATION,
  },
  RT022: {
    help: 'The field has the wrong type (a map where a list belongs, a number where a string does, …). Quote numbers and booleans meant as strings.',
    helpUri: FIELD_VALIDATION,
  },
  RT023: {
    help: 'The value is not one this field accepts. The message says what is allowed.',
    helpUri: FIELD_VALIDATION,
  },
  RT024: {
    help: 'Exactly one of the listed fields must be set (one scope, one credential provider).',
    helpUri: FIELD_VALIDATION,
  },
  RT030: {
    help: 'The SPIFFE ID does not follow the SPIFFE ID standard (spiffe://<trust domain>/<path>, lowercase trust domain, no empty, "." or ".." segments, no query or fragment).',
    helpUri: SPIFFE_ID,
  },
  RT031: {
    help: 'The workloadID is not a valid SPIFFE ID path: "/"-separated segments of letters, digits, ".", "-" and "_", without a leading "/".',
    helpUri: `${SPIFFE_ID}#22-path`,
  },
  RT032: {
    help: "The lifetime is outside what the credential service grants (AWS STS: 900 to 43200 seconds, and at most the role's MaxSessionDuration).",
    helpUri: 'https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html',
  },
  RT033: {
    help: 'The role ARN is malformed. It looks like arn:aws:iam::<12-digit account>:role/<name>.',
    helpUri: 'https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html',
  },
  RT034: {
    help: 'The URL is malformed, is not http(s), or carries credentials, a query or a fragment.',
    helpUri: 'https://www.rfc-editor.org/rfc/rfc3986',
  },
  RT035: {
    help: 'The address is neither a host name nor an IP address (a URL or a host:port is not), or the prefix is not a CIDR block.',
    helpUri: 'https://www.rfc-editor.org/rfc/rfc1123#section-2.1',
  },
  RT036: {
    help: 'The process selector key is not one the agent can attest (process:name, process:cmdline, k8s:pod:namespace, k8s:label:<key>, …).',
    helpUri: `${RIPTIDES}/reference/workloadidentity/`,
  },
  RT040: {
    help: 'Two resources of one kind share a name in one namespace; one would silently replace the other. Rename or delete one.',
    helpUri: 'https://kubernetes.io/docs/concepts/overview/working-with-objects/names/',
  },
  RT041: {
    help: 'Two identities share a workloadID, so they would issue the same SPIFFE ID. Give each its own.',
    helpUri: `${RIPTIDES}/reference/workloadidentity/`,
  },
  RT042: {
    help: 'The binding names a CredentialSource that does not exist in its namespace. Fix the name or add the source.',
    helpUri: `${RIPTIDES}/reference/credentialbinding/`,
  },
  RT043: {
    help: 'The egress rule names a WorkloadCredential (credentialName) that does not exist. Fix the name or add it.',
    helpUri: `${RIPTIDES}/reference/workloadidentity/`,
  },
  RT044: {
    help: 'The binding names a workloadID that no WorkloadIdentity has, so no workload would receive the credential.',
    helpUri: `${RIPTIDES}/reference/credentialbinding/`,
  },
  RT045: {
    help: 'The label selector matches no Service, so the rule applies to nothing yet. Check the labels.',
    helpUri: `${RIPTIDES}/reference/service/`,
  },
  RT046: {
    help: 'MUTUAL TLS toward an external Service cannot work: it holds no SVID from this trust domain. Use SIMPLE or leave the mode unset.',
    helpUri: `${RIPTIDES}/guides/mtls-between-services/`,
  },
  RT047: {
    help: 'Two identities in one scope have selectors that match the same process, so which identity it gets is ambiguous. Make the selectors disjoint.',
    helpUri: `${RIPTIDES}/reference/workloadidentity/`,
  },
  RT048: {
    help: 'An allow list names a SPIFFE ID in this trust domain that no identity has; nothing can use it yet. Check for a typo.',
    helpUri: `${RIPTIDES}/guides/mtls-between-services/`,
  },
  RT049: {
    help: 'A credential is injected toward a TLS service, but the identity does not intercept TLS, so the request cannot be rewritten. Set connection.tls.intercept: true.',
    helpUri: `${RIPTIDES}/guides/kubernetes-bearer-tokens/`,
  },
  RT050: {
    help: 'A Secret in git holds plaintext values (with or without a sops envelope). Create it in the cluster or a secrets directory, or encrypt every value with SOPS.',
    helpUri: 'https://kubernetes.io/docs/concepts/security/secrets-good-practices/',
  },
  RT051: {
    help: 'This credential source type is parsed but not fetched yet; its bindings will report FAILED.',
    helpUri: `${RIPTIDES}/reference/credentialsource/`,
  },
  RT052: {
    help: 'status is written by the reconciler; the value in git is ignored. Remove the block.',
    helpUri: `${K8S_OBJECTS}#object-spec-and-status`,
  },
  RT053: {
    help: "The WorkloadCredential named by an egress rule (credentialName) is for another workload than the rule's, so the credential would not reach it. Check both workloadIDs.",
    helpUri: `${RIPTIDES}/reference/workloadidentity/`,
  },
  RT054: {
    help: 'The Vault address is plain http: tokens and secrets would cross the network unencrypted. Use https.',
    helpUri: `${RIPTIDES}/guides/vault-integration/`,
  },
  RT055: {
    help: "An allow list names a SPIFFE ID in a trust domain that is neither this repository's nor one it federates with, so no peer can ever present it (often a sample or a copy from another environment). Fix the trust domain, or list it under federatesWith in riptides.config.yaml.",
    helpUri: `${SPIFFE_ID}#21-trust-domain`,
  },
  RT060: {
    help: 'riptides.config.yaml at the root of the policy path is unreadable or invalid. It holds "trustDomain: <name>", a bare SPIFFE trust domain name, and optionally "federatesWith", a list of such names.',
    helpUri: `${SPIFFE_ID}#21-trust-domain`,
  },
};
