package attestation

import (
	"encoding/hex"
	"strings"
)

// The enrolment record is a Kubernetes custom resource (its definition ships
// in packaging/cluster/10-crd.yaml): cluster-scoped, named after the node, so
// the API server keeps one record per node name.
const (
	EnrollmentGroup      = "attestation.certagent.io"
	EnrollmentVersion    = "v1alpha1"
	EnrollmentAPIVersion = EnrollmentGroup + "/" + EnrollmentVersion
	EnrollmentKind       = "TPMEnrollment"
	EnrollmentResource   = "tpmenrollments"
)

// TPMEnrollment is the enrolment record as plain Go (no Kubernetes
// libraries), so the node binary can print one for `kubectl apply` and the
// service can read one, from the same definition. Its JSON is the custom
// resource's.
type TPMEnrollment struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   EnrollmentMetadata `json:"metadata"`
	Spec       TPMEnrollmentSpec  `json:"spec"`
}

// EnrollmentMetadata is the part of a Kubernetes object's metadata a record
// is written with.
type EnrollmentMetadata struct {
	// Name is the node's name: the one name this TPM may obtain a
	// certificate for.
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// TPMEnrollmentSpec names the TPM.
type TPMEnrollmentSpec struct {
	// EKPublicKeyHash is EKHash of the TPM's endorsement key: "sha256:"
	// and 64 lower-case hex digits.
	EKPublicKeyHash string `json:"ekPublicKeyHash"`
	// EKCertificateIssuer is the EK certificate's issuer, for the
	// operator's eyes only: the service trusts manufacturers by its own
	// configuration, never by this field.
	EKCertificateIssuer string `json:"ekCertificateIssuer,omitempty"`
	// Addresses, when listed, are the only IP addresses the machine may
	// have in a kubelet serving certificate (the approver also requires
	// its Node to report them). Written by the operator's provisioning,
	// which knows them; the node never vouches for itself here.
	Addresses []string `json:"addresses,omitempty"`
	// DNSNames, when listed, are likewise the only DNS names besides the
	// node's name.
	DNSNames []string `json:"dnsNames,omitempty"`
}

// NewTPMEnrollment is the record enrolling the TPM with ekHash as node.
func NewTPMEnrollment(node, ekHash, ekCertificateIssuer string) TPMEnrollment {
	return TPMEnrollment{
		APIVersion: EnrollmentAPIVersion,
		Kind:       EnrollmentKind,
		Metadata:   EnrollmentMetadata{Name: node},
		Spec:       TPMEnrollmentSpec{EKPublicKeyHash: ekHash, EKCertificateIssuer: ekCertificateIssuer},
	}
}

// Validate checks a record as the API server's schema does: its kind, a
// node name, and an EK hash of the form EKHash makes.
func (e *TPMEnrollment) Validate() *Error {
	if e.APIVersion != EnrollmentAPIVersion || e.Kind != EnrollmentKind {
		return Refuse(ReasonBadRequest, "a TPMEnrollment is apiVersion %s, kind %s; got %s, %s", EnrollmentAPIVersion, EnrollmentKind, e.APIVersion, e.Kind)
	}
	if err := ValidateNodeName(e.Metadata.Name); err != nil {
		return err
	}
	return ValidateEKHash(e.Spec.EKPublicKeyHash)
}

// ValidateEKHash checks s is "sha256:" and 64 lower-case hex digits (the
// pattern packaging/cluster/10-crd.yaml enforces).
func ValidateEKHash(s string) *Error {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 || strings.ToLower(hexPart) != hexPart {
		return Refuse(ReasonBadRequest, "EK hash %q is not sha256:<64 lower-case hex digits>", s)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return Refuse(ReasonBadRequest, "EK hash %q is not sha256:<64 lower-case hex digits>", s)
	}
	return nil
}

// EKHashPattern is ValidateEKHash as a regular expression, for the CRD's
// OpenAPI schema (a test keeps the two in step).
const EKHashPattern = `^sha256:[0-9a-f]{64}$`
