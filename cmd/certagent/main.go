// Command certagent obtains and renews the kubelet's client and serving
// certificates; see the README.
package main

import (
	"os"

	"github.com/certagent/certagent/cmd/certagent/command"
)

func main() { os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr)) }
