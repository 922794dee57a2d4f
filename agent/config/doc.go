// Package config is certagent's configuration, on the node side: the file
// format (kind AgentConfig, apiVersion certagent.io/v1alpha1) and its
// defaults, loading a file and its config.d drop-ins, validation, the
// settings as docs/config.md lists them (with where each value came from),
// and what changed between two configurations.
//
// It reads files and nothing else: it starts nothing and talks to no API
// server. It knows nothing of command-line flags (package command lays them
// over the files) nor of the daemon that applies a configuration (package
// agent).
package config
