module github.com/lexfrei/extractedprism

go 1.26.8

require (
	github.com/alecthomas/kong v1.17.0
	github.com/pelletier/go-toml/v2 v2.2.4
	github.com/rogpeppe/go-internal v1.16.0
	github.com/siderolabs/go-loadbalancer v0.5.0
	github.com/siderolabs/tcpproxy v0.1.0
	go.uber.org/zap v1.28.0
)

require (
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	github.com/siderolabs/gen v0.8.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
