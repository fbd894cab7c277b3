package source

import (
	"context"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sshGitServer is a minimal Git-over-SSH server on loopback: it accepts
// one client key and runs git-upload-pack for "exec" requests, as
// sshd + git-shell would.
func sshGitServer(t *testing.T, host ssh.Signer, client ssh.PublicKey) string {
	t.Helper()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) == string(client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveSSH(c, cfg)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveSSH(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return // a client that rejected our host key ends here
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		for req := range creqs {
			if req.Type != "exec" || len(req.Payload) < 4 {
				_ = req.Reply(false, nil) // env and the like
				continue
			}
			cmdline := string(req.Payload[4:])
			prog, arg, _ := strings.Cut(cmdline, " ")
			if prog != "git-upload-pack" {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			cmd := exec.Command("git", "upload-pack", strings.Trim(arg, "'"))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
			status := uint32(0)
			if err := cmd.Run(); err != nil {
				status = 1
			}
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], status)
			_, _ = ch.SendRequest("exit-status", false, b[:])
			ch.Close()
			break
		}
	}
}

func TestGitSourceSSH(t *testing.T) {
	g, bare := remotePair(t)
	host, _ := hostKey(t)
	client, clientPriv := hostKey(t)
	addr := sshGitServer(t, host, client.PublicKey())
	block, err := ssh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeFile(t, "id_ed25519", string(pem.EncodeToMemory(block)))
	url := fmt.Sprintf("ssh://git@%s%s", addr, filepath.ToSlash(bare))

	s, err := NewGitSource(GitOptions{URL: url, CacheDir: t.TempDir(),
		Auth: Auth{SSHKeyFile: keyFile, KnownHostsFile: knownHostsFile(t, addr, host.PublicKey())}})
	if err != nil {
		t.Fatal(err)
	}
	if snap := mustSync(t, s, true); snap.Commit.SHA != g.run("rev-parse", "HEAD") {
		t.Fatalf("commit %s", snap.Commit.SHA)
	}
	g.write("apps/web.yaml", "over ssh\n")
	second := g.commit("second")
	g.push("main")
	if snap := mustSync(t, s, true); snap.Commit.SHA != second {
		t.Fatalf("after push: %s", snap.Commit.SHA)
	}
	mustSync(t, s, false)

	// The server's key is not the pinned one: refused, loudly.
	impostor, _ := hostKey(t)
	s2, _ := NewGitSource(GitOptions{URL: url, CacheDir: t.TempDir(),
		Auth: Auth{SSHKeyFile: keyFile, KnownHostsFile: knownHostsFile(t, addr, impostor.PublicKey())}})
	_, _, err = s2.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "host key for "+addr+" changed") {
		t.Fatalf("changed host key: %v", err)
	}
	// A host that is not pinned at all.
	s3, _ := NewGitSource(GitOptions{URL: url, CacheDir: t.TempDir(),
		Auth: Auth{SSHKeyFile: keyFile, KnownHostsFile: knownHostsFile(t, "other.example.org", host.PublicKey())}})
	if _, _, err = s3.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "is not in") {
		t.Fatalf("unknown host: %v", err)
	}
}
