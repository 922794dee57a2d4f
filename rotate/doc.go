// Package rotate decides when a certificate is renewed and keeps one
// certificate's renewal loop (node side): the deadline and back-off arithmetic (pure
// functions, table-tested), the wall-clock sleep that survives a suspend or a
// clock step, and Loop, the state machine that waits for the deadline, asks
// its Task to obtain a certificate, backs off after failures and listens for
// kicks (file events, forced renewals).
//
// It does not talk to the API server or touch certificate files: a Task
// (package bootstrap, wired by package agent) does. Time comes from an
// injected clock, randomness from an injected source, so a simulation can
// drive Loop over months of virtual time.
package rotate
