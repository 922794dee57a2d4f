// Package agent wires certagent together: it reads the configuration and the
// command line, sets up logging and signals, runs the bootstrap and renewal
// loop (packages bootstrap and rotate) and answers `certagent status`.
// It holds no certificate logic of its own.
package agent
