// Package command is certagent's command line (node side), as containerd's
// cmd/containerd/command: the commands run, renew, status, config, wait and
// version, their flags laid over the configuration file, the logger, and the
// start-up every command shares (signals first, then the agent).
//
// It parses, loads and prints; the work is the agent's (package agent), the
// configuration's rules are package config's and what status shows is
// package observe's. Nothing here runs in the daemon's loop.
package command
