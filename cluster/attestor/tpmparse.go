package attestor

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// unmarshalCanonical parses b as the TPM structure T and accepts it only if
// marshalling it back gives b exactly: what a check looks at is then what
// was hashed or signed, with nothing ignored after it. go-tpm's reflection
// may panic on input it did not expect; that is a parse error here, never a
// crash of the service.
func unmarshalCanonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed TPM structure: %v", r)
		}
	}()
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), b) {
		return nil, errNotCanonical
	}
	return v, nil
}

var errNotCanonical = errors.New("not canonically encoded (trailing or differently encoded bytes)")
