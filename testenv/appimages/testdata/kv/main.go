// Command kv is berth's stateful test app (berth/kv:1): a key-value store
// over HTTP that keeps each key in a file under $DATA (default /data).
//
//	PUT /kv/KEY   stores the request body (at most 1 MiB) under KEY
//	GET /kv/KEY   returns it, or 404
//	GET /healthz  "ok" once $DATA is writable
//
// Keys are 1 to 128 letters, digits, '.', '_' and '-', not starting with
// '.'. A value is written to a temporary file, synced and renamed, so a
// kill never leaves half a value. It listens on $PORT (default 8080).
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
)

var keyRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

func main() {
	dir := envOr("DATA", "/data")
	addr := ":" + envOr("PORT", "8080")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		f, err := os.CreateTemp(dir, ".health-")
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		f.Close()
		os.Remove(f.Name())
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		if !keyRE.MatchString(key) {
			http.Error(w, "bad key", http.StatusBadRequest)
			return
		}
		switch r.Method {
		case http.MethodGet:
			b, err := os.ReadFile(filepath.Join(dir, key))
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write(b)
		case http.MethodPut:
			if err := put(dir, key, http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "GET or PUT", http.StatusMethodNotAllowed)
		}
	})
	log.Printf("kv: serving %s on %s", dir, addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}

func put(dir, key string, body io.Reader) error {
	f, err := os.CreateTemp(dir, ".put-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, key))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
