// istiod-standalone: Istio's own discovery server (pilot/pkg/xds, the code istiod runs) serving
// the Istio config in a directory over plaintext gRPC, with an in-memory fake Kubernetes API
// instead of a cluster. It exists because `pilot-discovery discovery --configDir` panics without
// Kubernetes at the only Istio version the Go module proxy serves here (see docs/istio.md).
//
//	istiod-standalone --config DIR [--listen 127.0.0.1:0 | --listen unix:PATH] [--poll 50ms]
//	                  [--mesh FILE] [--log-level warn]
//
// --mesh is a MeshConfig in YAML applied over Istio's defaults, as the `mesh` key of istiod's
// configmap is (a Helm install sets `defaultProviders.metrics: [prometheus]` there, for one).
//
// Istio's logs go to stderr; stdout has only the lines below. Prints "listening on <addr>" once the first push context is built. Then it follows DIR: when
// its *.yaml/*.yml files change, it creates, updates and deletes configs in the server's store
// to match, pushes to every proxy, and prints "applied <n>: created a, updated b, deleted c"
// once that push is committed. A directory that does not parse is reported on stderr
// ("rejected: ...") and the last good config stays. Istio's features are read from the
// environment as istiod reads them (PILOT_ENABLE_ALPN_FILTER, ...).
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

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/log"
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

// readConfig concatenates the directory's YAML files in name order.
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

// key identifies a config in the store.
type key struct {
	kind            config.GroupVersionKind
	namespace, name string
}

// desired is one parsed config and a fingerprint of what a change to it would change.
type desired struct {
	config      config.Config
	fingerprint string
}

// parse turns the YAML into configs by key, defaulting the namespace as the fake server does.
func parse(text string) (map[key]desired, error) {
	configs, _, err := crd.ParseInputs(text)
	if err != nil {
		return nil, err
	}
	out := make(map[key]desired, len(configs))
	for _, c := range configs {
		if c.Namespace == "" {
			c.Namespace = "default"
		}
		spec, err := config.ToJSON(c.Spec)
		if err != nil {
			return nil, err
		}
		k := key{c.GroupVersionKind, c.Namespace, c.Name}
		out[k] = desired{c, fmt.Sprintf("%v|%v|%s", c.Labels, c.Annotations, spec)}
	}
	return out, nil
}

// apply makes the store hold want (was: what the last apply wanted; the store itself decides
// create or update, so a failed apply heals on the next) and pushes.
func apply(s *xds.FakeDiscoveryServer, was, want map[key]desired) (created, updated, deleted int, err error) {
	store := s.Store()
	for k, d := range want {
		old, ok := was[k]
		switch {
		case !ok || store.Get(k.kind, k.name, k.namespace) == nil:
			_, err = store.Create(d.config)
			created++
		case old.fingerprint != d.fingerprint:
			c := d.config
			c.CreationTimestamp = store.Get(k.kind, k.name, k.namespace).CreationTimestamp
			_, err = store.Update(c)
			updated++
		}
		if err != nil {
			return created, updated, deleted, fmt.Errorf("%v %s/%s: %w", k.kind, k.namespace, k.name, err)
		}
	}
	for k := range was {
		if _, ok := want[k]; !ok && store.Get(k.kind, k.name, k.namespace) != nil {
			if err = store.Delete(k.kind, k.name, k.namespace, nil); err != nil {
				return created, updated, deleted, fmt.Errorf("deleting %v %s/%s: %w", k.kind, k.namespace, k.name, err)
			}
			deleted++
		}
	}
	s.Discovery.ConfigUpdate(&model.PushRequest{Forced: true, Reason: model.NewReasonStats(model.ConfigUpdate)})
	return created, updated, deleted, nil
}

// waitCommitted waits (up to a deadline) until every update the server received is in its push
// context.
func waitCommitted(s *xds.FakeDiscoveryServer) {
	deadline := time.Now().Add(10 * time.Second)
	for s.Discovery.CommittedUpdates.Load() < s.Discovery.InboundUpdates.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// listen opens a TCP address or, with "unix:", a unix socket (replacing a stale one).
func listen(address string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		_ = os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", address)
}

func main() {
	dir := flag.String("config", "", "directory of Istio YAML")
	address := flag.String("listen", "127.0.0.1:0", "plaintext xDS address: host:port or unix:PATH")
	poll := flag.Duration("poll", 50*time.Millisecond, "how often to look for changes in --config")
	meshFile := flag.String("mesh", "", "MeshConfig YAML applied over Istio's defaults")
	level := flag.String("log-level", "warn", "istiod's log level (debug, info, warn, error, none), to stderr")
	flag.Parse()
	logs := log.DefaultOptions()
	logs.OutputPaths = []string{"stderr"}
	logs.SetDefaultOutputLevel(log.OverrideScopeName, log.StringToLevel(*level))
	if err := log.Configure(logs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	text, err := readConfig(*dir)
	if err == nil {
		_, err = parse(text)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	current, _ := parse(text)
	meshConfig := mesh.DefaultMeshConfig()
	if *meshFile != "" {
		b, err := os.ReadFile(*meshFile)
		if err == nil {
			meshConfig, err = mesh.ApplyMeshConfigDefaults(string(b))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var bound string
	s := xds.NewFakeDiscoveryServer(&failer{}, xds.FakeOptions{
		ConfigString: text,
		MeshConfig:   meshConfig,
		ListenerBuilder: func() (net.Listener, error) {
			l, err := listen(*address)
			if err == nil {
				bound = l.Addr().String()
				if l.Addr().Network() == "unix" {
					bound = "unix:" + bound
				}
			}
			return l, err
		},
	})
	fmt.Printf("listening on %s\n", bound)

	last, applied := text, 0
	for range time.Tick(*poll) {
		text, err := readConfig(*dir)
		if err != nil || text == last {
			continue
		}
		last = text
		want, err := parse(text)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rejected: %v\n", err)
			continue
		}
		created, updated, deleted, err := apply(s, current, want)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rejected: %v\n", err)
		}
		current = want
		waitCommitted(s)
		applied++
		fmt.Printf("applied %d: created %d, updated %d, deleted %d\n", applied, created, updated, deleted)
	}
}
