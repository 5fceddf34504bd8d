// Command kstatus prints the kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) verdict for the
// Kubernetes objects it reads as JSON on stdin: one object, a List (`kubectl get -o json`), or several
// objects one after another. For each object it prints one line
//
//	Kind/namespace/name Status message
//
// (namespace empty for cluster-scoped objects), Status being one of InProgress, Failed, Current,
// Terminating, NotFound, Unknown. This is the computation Flux's health checks, kpt and
// `cli-utils` apply: the e2e suite (e2e/tests/health.rs) uses it to check that Microplane's
// conditions mean what GitOps tools take them to mean.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// sourceSum is set by e2e/scripts/build-controlplane.sh to a hash of this source, so a changed
// source rebuilds the cached binary; `kstatus -version` prints it.
var sourceSum = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-version" {
		fmt.Println("kstatus (sigs.k8s.io/cli-utils v0.37.2)", sourceSum)
		return
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	dec.UseNumber()
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading JSON: %w", err)
		}
		if err := report(out, obj); err != nil {
			return err
		}
	}
}

// report writes the verdict for obj, or for each item when obj is a List.
func report(out io.Writer, obj map[string]any) error {
	if kind, _ := obj["kind"].(string); strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		for i, item := range items {
			m, ok := item.(map[string]any)
			if !ok {
				return fmt.Errorf("item %d of the %s is not an object", i, kind)
			}
			if err := report(out, m); err != nil {
				return err
			}
		}
		return nil
	}
	// unstructured wants JSON numbers as int64/float64, not json.Number.
	u := &unstructured.Unstructured{Object: numbers(obj).(map[string]any)}
	ref := fmt.Sprintf("%s/%s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	// One line per object: a message never spans lines.
	msg := strings.Join(strings.Fields(res.Message), " ")
	_, err = fmt.Fprintf(out, "%s %s %s\n", ref, res.Status, msg)
	return err
}

func numbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}
