// Command testimage is the one program in the container image the kubelet
// suite builds locally (no registry is reachable from the test machines):
// it is both the pod sandbox's pause process and the test pod's container.
//
//	testimage            wait for SIGTERM or SIGINT, then exit 0 (pause)
//	testimage log TEXT   print "TEXT <n>" once a second until signalled
//	testimage echo ARGS  print ARGS and exit 0 (for kubectl exec)
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "":
		<-stop
	case "log":
		text := strings.Join(os.Args[2:], " ")
		tick := time.NewTicker(time.Second)
		for n := 1; ; n++ {
			fmt.Printf("%s %d\n", text, n)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	case "echo":
		fmt.Println(strings.Join(os.Args[2:], " "))
	default:
		fmt.Fprintf(os.Stderr, "testimage: unknown mode %q (want none, log or echo)\n", mode)
		os.Exit(2)
	}
}
