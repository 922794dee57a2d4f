package agent

// Version is set at build time with -ldflags "-X github.com/certagent/certagent/agent.Version=...".
var Version = "dev"
