package command

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/certagent/certagent/agent"
)

const usage = `certagent obtains and renews the kubelet's client and serving certificates.

Usage:
  certagent run [flags]        run the agent (under systemd); --once to obtain what is missing and exit
  certagent renew [--force]    renew the certificates that are due (all with --force), then exit
  certagent status [flags]     show the certificates on disk and any pending request (-o text|json)
  certagent config [flags]     show the effective configuration and where each value comes from
                               (-o text|json); --check validates it as run would, starting nothing
  certagent wait [flags]       block until a kubelet can start: kubelet.conf accepted and (unless
                               serving is off) the serving certificate in place (kubelet's ExecStartPre)
  certagent attest enroll      print this node's TPMEnrollment, to enrol its TPM
                               (certagent attest enroll | kubectl apply -f -)
  certagent version            print the version

Run "certagent <command> -h" for the flags of a command.
`

// Main runs the command line args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	oneProcessor(os.Getenv)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCommand(args[1:], stdout, stderr)
	case "status":
		return statusCommand(args[1:], stdout, stderr)
	case "renew":
		return renewCommand(args[1:], stdout, stderr)
	case "config":
		return configCommand(args[1:], stdout, stderr)
	case "wait":
		return waitCommand(args[1:], stdout, stderr)
	case "attest":
		return attestCommand(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "certagent %s (%s, %s/%s)\n", agent.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "certagent: unknown command %q\n\n%s", args[0], usage)
	return 2
}
