// Command image builds a single-layer container image from scratch, without a
// container engine, and writes it as an OCI image layout tarball, which
// `ctr images import` reads with the digests unchanged. It prints the
// image's manifest digest.
//
//	image --out FILE.tar --tag NAME:TAG --file /in/image=/host/path[:mode[:uid:gid]]…
//	      [--user UID:GID] [--entrypoint ARG]… [--cmd ARG]… [--workdir DIR]
//
// NAME is fully qualified (docker.io/library/x, as containerd names images).
// Files are owned by root unless told; their mode defaults to the host file's.
// The directories above them are created (root, 0755). Every timestamp is the
// epoch and entries are sorted, so the same inputs give the same digest. The
// image is for the platform the tool runs on (linux/GOARCH).
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var epoch = time.Unix(0, 0).UTC()

type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func must[T any](v T, err error) T { check(err); return v }

func main() {
	var out, tag, user, workdir string
	var files, entrypoint, cmd list
	flag.StringVar(&out, "out", "", "tarball to write")
	flag.StringVar(&tag, "tag", "", "image reference, NAME:TAG with NAME fully qualified (docker.io/library/x)")
	flag.Var(&files, "file", "/in/image=/host/path[:mode[:uid:gid]] (repeatable)")
	flag.StringVar(&user, "user", "", "UID:GID the container runs as")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable)")
	flag.Var(&cmd, "cmd", "command argument (repeatable)")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.Parse()
	if out == "" || tag == "" || len(files) == 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ref := must(name.NewTag(tag, name.StrictValidation))
	raw := layerTar(files)
	layer := must(tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer)))
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img := must(mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "hack/image", Comment: "from scratch"}}))
	cf := must(img.ConfigFile()).DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{User: user, WorkingDir: workdir, Entrypoint: entrypoint, Cmd: cmd}
	img = must(mutate.ConfigFile(img, cf))
	writeLayout(out, ref, img)
	fmt.Println(must(img.Digest()))
}

type file struct {
	path, host string
	mode       int64
	uid, gid   int
}

func parseFile(spec string) file {
	in, host, ok := strings.Cut(spec, "=")
	if !ok || !path.IsAbs(in) || host == "" {
		check(fmt.Errorf("--file %q: want /in/image=/host/path[:mode[:uid:gid]]", spec))
	}
	parts := strings.Split(host, ":")
	f := file{path: strings.TrimPrefix(path.Clean(in), "/"), host: parts[0], mode: -1}
	var err error
	switch len(parts) {
	case 4:
		f.uid, err = strconv.Atoi(parts[2])
		if err == nil {
			f.gid, err = strconv.Atoi(parts[3])
		}
		fallthrough
	case 2:
		if err == nil {
			f.mode, err = strconv.ParseInt(parts[1], 8, 32)
		}
	case 1:
	default:
		err = fmt.Errorf("too many fields")
	}
	if err != nil {
		check(fmt.Errorf("--file %q: %v", spec, err))
	}
	if f.mode < 0 {
		f.mode = int64(must(os.Stat(f.host)).Mode().Perm())
	}
	return f
}

// layerTar is the uncompressed layer: each file after the directories above it, in path order.
func layerTar(specs []string) []byte {
	var files []file
	for _, s := range specs {
		files = append(files, parseFile(s))
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{".": true}
	var mkdirs func(string)
	mkdirs = func(dir string) {
		if !dirs[dir] {
			mkdirs(path.Dir(dir))
			dirs[dir] = true
			check(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}))
		}
	}
	for i, f := range files {
		if i > 0 && files[i-1].path == f.path {
			check(fmt.Errorf("/%s given twice", f.path))
		}
		mkdirs(path.Dir(f.path))
		data := must(os.ReadFile(f.host))
		check(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Uid: f.uid, Gid: f.gid,
			Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}))
		must(tw.Write(data))
	}
	check(tw.Close())
	return buf.Bytes()
}

// writeLayout writes img as an OCI image layout in a tar, named in index.json the
// way containerd (io.containerd.image.name, normalised like docker.io/library/x:tag)
// and the spec (org.opencontainers.image.ref.name) read it.
func writeLayout(out string, ref name.Tag, img v1.Image) {
	registry := ref.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	manifest := must(img.RawManifest())
	index := must(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: must(img.MediaType()), Size: int64(len(manifest)), Digest: must(img.Digest()),
			Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
			Annotations: map[string]string{
				"io.containerd.image.name":          registry + "/" + ref.RepositoryStr() + ":" + ref.TagStr(),
				"org.opencontainers.image.ref.name": ref.TagStr(),
			}}}}))

	tmp := out + ".tmp" // renamed once complete
	f := must(os.Create(tmp))
	tw := tar.NewWriter(f)
	add := func(name string, r io.Reader, size int64) {
		check(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}))
		must(io.Copy(tw, r))
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	layout := `{"imageLayoutVersion":"1.0.0"}`
	add("oci-layout", strings.NewReader(layout), int64(len(layout)))
	add("index.json", bytes.NewReader(index), int64(len(index)))
	add(blob(must(img.Digest())), bytes.NewReader(manifest), int64(len(manifest)))
	config := must(img.RawConfigFile())
	add(blob(must(img.ConfigName())), bytes.NewReader(config), int64(len(config)))
	for _, l := range must(img.Layers()) {
		rc := must(l.Compressed())
		add(blob(must(l.Digest())), rc, must(l.Size()))
		check(rc.Close())
	}
	check(tw.Close())
	check(f.Close())
	check(os.Rename(tmp, out))
}
