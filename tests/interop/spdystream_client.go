// A kubectl-like SPDY exec client built on moby/spdystream, the library
// kubectl and the kubelet use (Debian: golang-github-docker-spdystream-dev).
// It checks crid's SPDY implementation against Go's framer and zlib
// dictionary. Run by the ignored test `spdystream_go_client_interop` in
// pod-helper/src/streaming/interop_tests.rs:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go run spdystream_client.go ADDR
//
// It upgrades with v4.channel.k8s.io, opens error/stdin/stdout/stderr,
// sends 200 KiB + "hello" on stdin, half-closes it, and prints a summary
// line of what came back on stdout, stderr and the error stream.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/moby/spdystream"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func main() {
	conn, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fail("dial: %v", err)
	}
	req := "POST /exec/token HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" +
		"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		fail("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		fail("read response: %v", err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("X-Stream-Protocol-Version") != "v4.channel.k8s.io" {
		fail("bad upgrade: %d %v", resp.StatusCode, resp.Header)
	}
	sc, err := spdystream.NewConnection(conn, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	open := func(t string) *spdystream.Stream {
		h := http.Header{}
		h.Set("streamType", t)
		s, err := sc.CreateStream(h, nil, false)
		if err != nil {
			fail("create %s: %v", t, err)
		}
		if err := s.Wait(); err != nil {
			fail("wait %s: %v", t, err)
		}
		return s
	}
	errS := open("error")
	stdin := open("stdin")
	stdout := open("stdout")
	stderr := open("stderr")
	if _, err := sc.Ping(); err != nil {
		fail("ping: %v", err)
	}
	var wg sync.WaitGroup
	var out, errOut, status []byte
	read := func(s *spdystream.Stream, dst *[]byte) {
		defer wg.Done()
		b, err := io.ReadAll(s)
		if err != nil {
			fail("read: %v", err)
		}
		*dst = b
	}
	wg.Add(3)
	go read(stdout, &out)
	go read(stderr, &errOut)
	go read(errS, &status)
	payload := strings.Repeat("x", 200*1024) + "hello"
	for off := 0; off < len(payload); off += 32 * 1024 {
		end := off + 32*1024
		if end > len(payload) {
			end = len(payload)
		}
		if _, err := stdin.Write([]byte(payload[off:end])); err != nil {
			fail("stdin: %v", err)
		}
	}
	if err := stdin.Close(); err != nil {
		fail("close stdin: %v", err)
	}
	wg.Wait()
	fmt.Printf("stdout_len=%d stdout_ok=%v stderr=%q status=%s\n",
		len(out), string(out) == payload, string(errOut), string(status))
}
