package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupStorageLocationSpec says where backups are stored: an S3-compatible bucket or a
// directory that the manager and every agent mount at the same path.
// +kubebuilder:validation:XValidation:rule="has(self.s3) != has(self.filesystem)",message="set exactly one of spec.s3 or spec.filesystem"
type BackupStorageLocationSpec struct {
	// s3 stores backups in an S3-compatible bucket.
	// +optional
	S3 *S3Location `json:"s3,omitempty"`

	// filesystem stores backups in a directory mounted on the manager and on every
	// agent (for example NFS). The local demo uses it.
	// +optional
	Filesystem *FilesystemLocation `json:"filesystem,omitempty"`

	// recoveryRecipients are age X25519 public keys (age1...) of the people or offline
	// vaults that can recover repository keys without this cluster. Each repository's
	// key is written into the store beside the repository
	// (<prefix>/<uploader>/<namespace>.key.age), encrypted to all of them, before the
	// repository is initialised; adding a recipient escrows every repository again.
	// The cluster never needs a private identity, except to recover a key whose Secret
	// is lost. Without recipients a repository's key exists only in a Secret of this
	// cluster: losing the cluster loses the data.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=62
	// +kubebuilder:validation:XValidation:rule="self.all(r, r.matches('^age1[02-9ac-hj-np-z]{58}$'))",message="spec.recoveryRecipients must be age X25519 public keys: age1 followed by 58 lowercase bech32 characters, as age-keygen prints them"
	RecoveryRecipients []string `json:"recoveryRecipients,omitempty"`

	// probeInterval is how often the store is probed (write, read back and delete a
	// small object) while it is Ready. A failing store is re-probed sooner, on a back-off.
	// At least 30s: each probe is three requests to the store.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s')",message="probeInterval must be at least 30s"
	ProbeInterval *metav1.Duration `json:"probeInterval,omitempty"`
}

// S3Location is a bucket and prefix on an S3-compatible object store.
// +kubebuilder:validation:XValidation:rule="!has(self.insecure) || !self.insecure || !has(self.caBundle)",message="caBundle is for TLS; it cannot be combined with insecure: true"
// +kubebuilder:validation:XValidation:rule="has(self.endpoint) || has(self.region)",message="set endpoint, or region for AWS S3"
type S3Location struct {
	// bucket is the name of an existing bucket. Holdfast never creates buckets.
	// +required
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9][a-z0-9.-]*[a-z0-9]$')",message="bucket must be an S3 bucket name: lowercase letters, digits, '.' and '-'"
	Bucket string `json:"bucket"`

	// prefix is the folder inside the bucket under which Holdfast writes
	// (<prefix>/kopia/<namespace>/ and <prefix>/restic/<namespace>/). Without
	// leading or trailing slash.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.endsWith('/')",message="prefix must not start or end with '/'"
	// +kubebuilder:validation:XValidation:rule="!self.contains('//') && !self.split('/').exists(p, p == '..' || p == '.')",message="prefix must not contain '//', '.' or '..' segments"
	Prefix string `json:"prefix,omitempty"`

	// endpoint is the store's host and port (minio.example.com:9000), without scheme.
	// Required for every store but AWS S3, where it defaults from region.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('://')",message="endpoint is host[:port] without a scheme; for plain HTTP set insecure: true"
	// +kubebuilder:validation:XValidation:rule="self.contains('://') || self.matches('^[A-Za-z0-9.\\\\-\\\\[\\\\]:]+$')",message="endpoint must be host[:port]: letters, digits, '.', '-', ':' and [] for IPv6"
	Endpoint string `json:"endpoint,omitempty"`

	// region of the bucket.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Region string `json:"region,omitempty"`

	// forcePathStyle addresses the bucket as <endpoint>/<bucket> rather than
	// <bucket>.<endpoint>; most self-hosted stores need it.
	// +optional
	ForcePathStyle bool `json:"forcePathStyle,omitempty"`

	// caBundle is a PEM bundle of the certificate authorities that sign the store's
	// TLS certificate, when they are not in the system trust store.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CABundle []byte `json:"caBundle,omitempty"`

	// insecure talks plain HTTP. Only for test stores on a trusted network.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// credentialsSecretRef names a Secret in the operator namespace with the keys
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optionally AWS_SESSION_TOKEN).
	// +required
	CredentialsSecretRef SecretReference `json:"credentialsSecretRef"`
}

// SecretReference names a Secret in the operator namespace (holdfast-system).
type SecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// FilesystemLocation is a directory mounted at the same path on the manager and on
// every agent.
type FilesystemLocation struct {
	// path is the absolute path of the directory.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="path must be absolute"
	// +kubebuilder:validation:XValidation:rule="!self.split('/').exists(p, p == '..')",message="path must not contain '..'"
	Path string `json:"path"`
}

// BackupStorageLocationStatus is what the last probe of the store found.
type BackupStorageLocationStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (the last probe wrote, read back and deleted an object),
	// Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastProbeTime is when the store was last probed.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// url is where the store is, as a URL (s3://bucket/prefix or file:///path).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url,omitempty"`
}

// Key escrow conditions: KeysEscrowed on a storage location (are the keys of all its
// repositories escrowed to its current recipients?), KeyEscrowed on a repository.
const (
	ConditionKeysEscrowed = "KeysEscrowed"
	ConditionKeyEscrowed  = "KeyEscrowed"
)

// KeyEscrowStatus says where a repository's key is escrowed and to which recipients.
type KeyEscrowStatus struct {
	// url of the escrow object (s3://bucket/prefix/kopia/<namespace>.key.age).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// recipients is how many recovery recipients it is encrypted to.
	// +required
	Recipients int32 `json:"recipients"`
	// recipientsDigest identifies the set of recipients; when the storage location's
	// set differs, the key is escrowed again.
	// +required
	// +kubebuilder:validation:MaxLength=64
	RecipientsDigest string `json:"recipientsDigest"`
	// time the escrow was written (or, after a recovery, found).
	// +required
	Time metav1.Time `json:"time"`
}

// BackupStorageLocation is where backups go: an S3-compatible bucket or a shared
// filesystem. It is Ready only after a real probe of the store.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bsl,categories=holdfast
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`
// +kubebuilder:printcolumn:name="Last Probe",type=date,JSONPath=`.status.lastProbeTime`
// +kubebuilder:printcolumn:name="Keys Escrowed",type=string,JSONPath=`.status.conditions[?(@.type=="KeysEscrowed")].status`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BackupStorageLocation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says where backups are stored.
	// +required
	Spec BackupStorageLocationSpec `json:"spec"`

	// status is what the last probe found.
	// +optional
	Status BackupStorageLocationStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BackupStorageLocationList is a list of BackupStorageLocations.
type BackupStorageLocationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackupStorageLocation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BackupStorageLocation{}, &BackupStorageLocationList{})
}
