// Package observe is the operator's view of a node's certificates (node
// side): what the daemon knows about its two certificates and kubelet.conf
// (Certs), the systemd STATUS line made of it, the Prometheus exposition of
// certagent's series, the kubelet's certificate-manager series and the
// process's, the Kubernetes Events on the Node (rate-limited, folded into
// series), and `certagent status`'s reading of the files on disk.
//
// It reports; it decides nothing: it obtains no certificate, never retries a
// step and sends nothing to systemd (package agent does, with what this
// package renders). Its only API requests are the Events, written with the
// client the caller hands it.
package observe
