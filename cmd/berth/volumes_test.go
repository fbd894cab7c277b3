package main

import (
	"strings"
	"testing"
)

func TestWriteVolumes(t *testing.T) {
	var b strings.Builder
	rows := []volumeRow{
		{App: "kv", Volume: "data", Slot: 1, Name: "kv-data-1", Pool: "default", Size: "1GiB", Used: 3 << 20, State: "retained"},
		{App: "kv", Volume: "data", Slot: 0, Name: "kv-data-0", Pool: "default", Size: "1GiB", Used: 1536 << 20, AttachedTo: []string{"kv-0"}, State: "attached", Snapshots: []string{"berth-aaa", "berth-bbb"}},
		{App: "gone\x1b[2J", Volume: "data", Slot: 0, Name: "gone-data-0", Pool: "default", State: "orphaned"},
	}
	if err := writeVolumes(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"APP  SLOT  VOLUME       POOL     SIZE  USED    ATTACHED TO  STATE     SNAPSHOTS",
		`gone\x1b[2J  0     gone-data-0  default  -     0B      -            orphaned  0`,
		"kv   0     kv-data-0    default  1GiB  1.5GiB  kv-0         attached  2 (last berth-bbb)",
		"kv   1     kv-data-1    default  1GiB  3MiB    -            retained  0",
	}
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("got\n%s", b.String())
	}
	for i := range want {
		if strings.Join(strings.Fields(got[i]), " ") != strings.Join(strings.Fields(want[i]), " ") {
			t.Errorf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
	b.Reset()
	if _ = writeVolumes(&b, nil); b.String() != "No volumes.\n" {
		t.Errorf("empty: %q", b.String())
	}
}
