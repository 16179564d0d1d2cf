// istiod-standalone: Istio's own discovery server (pilot/pkg/xds, the code istiod runs) serving
// the Istio config in a directory over plaintext gRPC on a loopback port, with an in-memory fake
// Kubernetes API instead of a cluster. It exists because `pilot-discovery discovery --configDir`
// panics without Kubernetes at the only Istio version the Go module proxy serves here (see
// docs/istio.md).
//
//	istiod-standalone --config DIR [--listen 127.0.0.1:0]
//
// Prints "listening on <addr>" once the first push context is built. The directory is read once
// at start (following file changes is still to do, for issue #6).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"istio.io/istio/pilot/test/xds"
)

// failer is the test.Failer the fake server wants, for a long-running process: fatal means exit.
type failer struct{ cleanups []func() }

func (f *failer) Fail()                        { os.Exit(1) }
func (f *failer) FailNow()                     { os.Exit(1) }
func (f *failer) Fatal(args ...any)            { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }
func (f *failer) Fatalf(s string, args ...any) { fmt.Fprintf(os.Stderr, s+"\n", args...); os.Exit(1) }
func (f *failer) Log(args ...any)              { fmt.Fprintln(os.Stderr, args...) }
func (f *failer) Logf(s string, args ...any)   { fmt.Fprintf(os.Stderr, s+"\n", args...) }
func (f *failer) TempDir() string              { d, _ := os.MkdirTemp("", "istiod"); return d }
func (f *failer) Helper()                      {}
func (f *failer) Cleanup(fn func())            { f.cleanups = append(f.cleanups, fn) }
func (f *failer) Skip(args ...any)             { f.Fatal(args...) }

func readConfig(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return "", err
		}
		parts = append(parts, string(b))
	}
	return strings.Join(parts, "\n---\n"), nil
}

func main() {
	dir := flag.String("config", "", "directory of Istio YAML")
	listen := flag.String("listen", "127.0.0.1:0", "plaintext xDS address")
	flag.Parse()
	config, err := readConfig(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var addr string
	s := xds.NewFakeDiscoveryServer(&failer{}, xds.FakeOptions{
		ConfigString: config,
		ListenerBuilder: func() (net.Listener, error) {
			l, err := net.Listen("tcp", *listen)
			if err == nil {
				addr = l.Addr().String()
			}
			return l, err
		},
	})
	_ = s
	fmt.Printf("listening on %s\n", addr)
	for {
		time.Sleep(time.Hour)
	}
}
