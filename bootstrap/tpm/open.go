package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultPath is the kernel's TPM resource manager: it flushes what a process
// leaves loaded when it closes the device, and lets several users share the TPM.
const DefaultPath = "/dev/tpmrm0"

// commandTimeout bounds one TPM command on a socket (an RSA primary key
// takes seconds on slow TPMs; swtpm answers in milliseconds).
const commandTimeout = 2 * time.Minute

// maxResponse is the largest TPM response accepted (TPM_PT_MAX_RESPONSE_SIZE
// is 4096 on every TPM we know of).
const maxResponse = 8192

// open opens the TPM at path: a character device ("/dev/tpmrm0", the
// default when path is empty), "tcp://host:port" or "unix:/path/to/socket"
// (a raw TPM 2.0 command stream, as `swtpm socket --server` serves it).
func open(path string) (transport.TPMCloser, error) {
	switch {
	case path == "":
		path = DefaultPath
	case strings.HasPrefix(path, "tcp://"):
		return dialStream("tcp", strings.TrimPrefix(path, "tcp://"))
	case strings.HasPrefix(path, "unix:"):
		return dialStream("unix", strings.TrimPrefix(strings.TrimPrefix(path, "unix:"), "//"))
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening TPM %s: %w; is this node's TPM enabled, and may certagent use it (root, or the tss group)?", path, err)
	}
	return t, nil
}

func dialStream(network, addr string) (transport.TPMCloser, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connecting to TPM at %s:%s: %w", network, addr, err)
	}
	return &streamTPM{conn: c}, nil
}

// streamTPM sends raw TPM commands over a stream socket. Unlike a device,
// whose read returns one whole response, a socket may return a response in
// pieces: it reads the header, then exactly the size the header announces.
type streamTPM struct{ conn net.Conn }

// rcRetry is TPM_RC_RETRY: the TPM was busy; send the same command again.
const rcRetry = 0x922

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	for delay := time.Millisecond; ; delay *= 2 {
		rsp, err := s.roundTrip(cmd)
		if err != nil || binary.BigEndian.Uint32(rsp[6:10]) != rcRetry || delay > time.Second {
			return rsp, err
		}
		time.Sleep(delay)
	}
}

func (s *streamTPM) roundTrip(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, fmt.Errorf("setting TPM socket deadline: %w", err)
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("sending TPM command: %w", err)
	}
	var hdr [10]byte // tag, size, response code
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxResponse {
		return nil, fmt.Errorf("TPM response announces %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.conn.Close() }
