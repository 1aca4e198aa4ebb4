// Pins go-containerregistry for hack/image.sh, which builds kube-jit's OCI images
// from scratch without a container engine. Kept apart from the other tool modules.
module kube-jit.local/hack/image

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
