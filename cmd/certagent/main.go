// Command certagent is the node's binary (node side): it obtains and renews
// the kubelet's client and serving certificates; see the README. main only
// runs the command line, package command.
package main

import (
	"os"

	"github.com/certagent/certagent/cmd/certagent/command"
)

func main() { os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr)) }
