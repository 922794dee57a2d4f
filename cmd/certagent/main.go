// Command certagent obtains and renews the kubelet's client and serving
// certificates; see the README.
package main

import (
	"os"

	"github.com/certagent/certagent/agent"
)

func main() { os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr)) }
