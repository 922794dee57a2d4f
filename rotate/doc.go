// Package rotate decides when to act: the renewal deadline of a certificate
// and the back-off between failed attempts. Its functions are pure (time and
// randomness come in as arguments) so they are table-tested without sleeping.
// It does not talk to the API server or touch files.
package rotate
