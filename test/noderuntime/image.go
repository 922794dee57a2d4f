package noderuntime

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// testModuleDir is the test module's directory (this file's parent's
// parent), where BuildImage builds ./cmd/testimage.
func testModuleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", fmt.Errorf("locate the test module: source path %q is not absolute (built with -trimpath?)", file)
	}
	return filepath.Dir(filepath.Dir(file)), nil
}

// ImageName is the reference the locally built test image is imported
// under; it is also containerd's sandbox (pause) image here.
const ImageName = "certagent.test/testimage:1"

// ImageBinary is where the test program sits in the image, its entrypoint.
const ImageBinary = "/testimage"

// BuildImage builds test/cmd/testimage (static, for this machine's
// architecture) and packs it as a one-layer OCI image archive named
// ImageName, which `ctr images import` accepts; it returns the archive's
// path in dir.
func BuildImage(ctx context.Context, dir string) (string, error) {
	mod, err := testModuleDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "testimage")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/testimage")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the test image's program: %w\n%s", err, out)
	}
	program, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	archive, err := ociArchive(program)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "testimage.oci.tar")
	return path, os.WriteFile(path, archive, 0o644)
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func describe(mediaType string, blob []byte) descriptor {
	sum := sha256.Sum256(blob)
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: len(blob)}
}

// ociArchive is an OCI image layout (image-spec v1.0) in a tar: oci-layout,
// index.json and the blobs of one image whose single uncompressed layer
// holds program at ImageBinary.
func ociArchive(program []byte) ([]byte, error) {
	var layer bytes.Buffer
	if err := writeTar(&layer, map[string][]byte{strings.TrimPrefix(ImageBinary, "/"): program}, 0o755); err != nil {
		return nil, err
	}
	layerDesc := describe("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": []string{ImageBinary}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := describe("application/vnd.oci.image.config.v1+json", config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := describe("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name":          ImageName,
		"org.opencontainers.image.ref.name": ImageName[strings.LastIndex(ImageName, ":")+1:],
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []descriptor{manifestDesc}})
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": index,
	}
	for _, blob := range [][]byte{layer.Bytes(), config, manifest} {
		d := describe("", blob)
		files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")] = blob
	}
	var out bytes.Buffer
	if err := writeTar(&out, files, 0o644); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// writeTar writes files in a stable order with a fixed time, so that the
// same program always makes the same image.
func writeTar(w *bytes.Buffer, files map[string][]byte, mode int64) error {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, name := range names {
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dirNames []string
	for d := range dirs {
		dirNames = append(dirNames, d)
	}
	slices.Sort(dirNames)
	epoch := time.Unix(0, 0)
	for _, d := range dirNames {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return err
		}
	}
	return tw.Close()
}
