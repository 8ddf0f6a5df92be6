// Labels and annotations the operator puts on the objects it owns. They are API: users select on
// them, and the Coordinator's schema forbids podLabels and podAnnotations from overriding them.

export const LABEL_NAME = "app.kubernetes.io/name";
export const LABEL_INSTANCE = "app.kubernetes.io/instance";
export const LABEL_COMPONENT = "app.kubernetes.io/component";
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";

/** The labels of every object the operator owns; a user's podLabels may not set them. */
export const OPERATOR_LABELS = [LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT, LABEL_MANAGED_BY] as const;

/** On the pod template: a digest of what must restart the pods when it changes. */
export const ANNOTATION_CONFIG_HASH = "darkbloom.dev/config-hash";
/**
 * On a Coordinator, set by a person: a rotation of the peer token is asked for by setting it to a
 * value the peer Secret has not recorded yet (any value, such as a timestamp, as `kubectl rollout
 * restart` does with its annotation).
 */
export const ANNOTATION_ROTATE_PEER_TOKEN = "darkbloom.dev/rotate-peer-token";
/** On the peer Secret: the ANNOTATION_ROTATE_PEER_TOKEN value its current token answered. */
export const ANNOTATION_PEER_TOKEN_ROTATION = "darkbloom.dev/peer-token-rotation";
/** On a migration Job: the image it migrates the database to. */
export const ANNOTATION_IMAGE = "darkbloom.dev/image";
/** On a migration Job: the hash of the database URL it migrates (the URL is a secret). */
export const ANNOTATION_DATABASE = "darkbloom.dev/database";
/** On a migration Job: the digest of that image's reference, which also names the Job. */
export const LABEL_IMAGE_HASH = "darkbloom.dev/image-hash";
