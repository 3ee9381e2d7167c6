// The benchmark harness is its own module so that the product's `go vet ./...`,
// `go test ./...` and linters never see it. Standard library only.
module github.com/lexfrei/extractedprism/bench

go 1.26.8
