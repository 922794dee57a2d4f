// Command certagent-cluster is the cluster side of certagent: the TPM
// attestation service nodes prove their TPM to, the command that makes its
// TLS material (docs/attestation.md), and the approver of kubelet serving
// CSRs (docs/approver.md).
package main

import (
	"os"

	"github.com/certagent/certagent/cluster/command"
)

func main() { os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr)) }
