// Command certagent-cluster is the cluster side of certagent's TPM
// attestation: the service nodes prove their TPM to, and the command that
// makes its TLS material; see docs/attestation.md.
package main

import (
	"os"

	"github.com/certagent/certagent/cluster/command"
)

func main() { os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr)) }
