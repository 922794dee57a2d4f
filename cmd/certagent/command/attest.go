package command

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/protocol/attestation"
)

// attestCommand is `certagent attest enroll`: it reads this node's TPM and
// prints the TPMEnrollment an operator applies to enrol it (`certagent
// attest enroll | kubectl apply -f -`). It writes nothing and needs no
// network.
func attestCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "enroll" {
		fmt.Fprintf(stderr, "certagent attest: the one subcommand is enroll (print this node's TPMEnrollment)\n")
		return 2
	}
	c := newCommonFlags("attest enroll", stderr)
	device := c.fs.String("tpm", "", "the TPM (default: attestation.tpm, else /dev/tpmrm0; tcp://host:port or unix:/path for a software TPM)")
	output := c.fs.String("o", "yaml", "output format: yaml or json")
	cfg, code := c.start(args[1:], false)
	if code != 0 {
		return code
	}
	if verr := attestation.ValidateNodeName(cfg.NodeName); verr != nil {
		fmt.Fprintf(stderr, "certagent: %s\n", verr.Message)
		return 2
	}
	path := *device
	if path == "" {
		path = cfg.Attestation.TPM
	}
	info, err := tpm.Enrollment(path)
	if err != nil {
		fmt.Fprintf(stderr, "certagent: reading the TPM's endorsement key: %v\n", err)
		return 1
	}
	rec := attestation.NewTPMEnrollment(cfg.NodeName, info.EKHash, info.EKCertificateIssuer)
	var out []byte
	switch *output {
	case "yaml":
		out, err = yaml.Marshal(rec)
	case "json":
		out, err = json.MarshalIndent(rec, "", "  ")
		out = append(out, '\n')
	default:
		fmt.Fprintf(stderr, "certagent: unknown output format %q (yaml or json)\n", *output)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(out)
	return 0
}
