package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
)

// volumeRow is one line of `berth volumes`.
type volumeRow struct {
	App, Volume, Name, Pool, Size string
	Slot                          int
	Used                          uint64
	AttachedTo                    []string
	// State is "attached", "retained" (detached while its app still has
	// replicas: a slot scaled away) or "orphaned" (its app has none).
	State     string
	Snapshots []string
}

func newVolumesCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "volumes",
		Short: "List the owner's volumes: app, slot, size, use, attachment, snapshots",
		Long: `volumes lists the LXD custom storage volumes of spec.system.volumes that the
owner's berth made, in every storage pool: each one's app, slot and volume
name, its size and what it holds, the instance it is attached to, whether it
is retained (detached, its app still runs: a slot scaled away) or orphaned
(its app has no replica left), and its snapshots.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := g.lxd.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rows, err := listVolumes(ctx, c, g.owner)
			if err != nil {
				return err
			}
			return writeVolumes(cmd.OutOrStdout(), rows)
		},
	}
}

// listVolumes reads the owner's volumes with their use and snapshots.
func listVolumes(ctx context.Context, c *lxd.Client, owner string) ([]volumeRow, error) {
	insts, err := c.ListInstanceRecords(ctx)
	if err != nil {
		return nil, err
	}
	running := map[string]bool{} // apps with a replica of this owner
	for _, i := range insts {
		if i.Config[ownership.KeyOwner] == owner {
			running[i.Config[ownership.KeyApp]] = true
		}
	}
	pools, err := c.ListStoragePools(ctx)
	if err != nil {
		return nil, err
	}
	slices.Sort(pools)
	var rows []volumeRow
	for _, pool := range pools {
		vols, err := c.ListVolumes(ctx, pool)
		if err != nil {
			return nil, err
		}
		for _, v := range vols {
			if v.Config[ownership.KeyOwner] != owner {
				continue
			}
			id, _ := ownership.ParseVolume(v.Name, v.Config)
			t := lxd.VolumeTarget{Pool: pool, Name: v.Name, Member: memberOf(v.Location)}
			row := volumeRow{App: id.App, Volume: id.Name, Slot: id.Slot, Name: v.Name, Pool: pool, Size: v.Config["size"], AttachedTo: v.AttachedTo()}
			if u, err := c.VolumeUsage(ctx, t); err == nil {
				row.Used = u.Used
			}
			snaps, err := c.ListVolumeSnapshots(ctx, t)
			if err != nil {
				return nil, err
			}
			for _, s := range snaps {
				row.Snapshots = append(row.Snapshots, s.Name)
			}
			switch {
			case len(row.AttachedTo) > 0:
				row.State = "attached"
			case running[id.App]:
				row.State = "retained"
			default:
				row.State = "orphaned"
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func memberOf(location string) string {
	if location == "none" {
		return ""
	}
	return location
}

// writeVolumes prints the rows as a table, names escaped.
func writeVolumes(out io.Writer, rows []volumeRow) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(out, "No volumes.")
		return err
	}
	slices.SortFunc(rows, func(a, b volumeRow) int {
		if c := strings.Compare(a.App, b.App); c != 0 {
			return c
		}
		if c := strings.Compare(a.Volume, b.Volume); c != 0 {
			return c
		}
		return a.Slot - b.Slot
	})
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSLOT\tVOLUME\tPOOL\tSIZE\tUSED\tATTACHED TO\tSTATE\tSNAPSHOTS")
	for _, r := range rows {
		attached := strings.Join(r.AttachedTo, ",")
		if attached == "" {
			attached = "-"
		}
		snaps := strconv.Itoa(len(r.Snapshots))
		if n := len(r.Snapshots); n > 0 {
			snaps += " (last " + r.Snapshots[n-1] + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeText(r.App), r.Slot, safeText(r.Name), safeText(r.Pool),
			safeText(orDashText(r.Size)), humanBytes(r.Used), safeText(attached), r.State, safeText(snaps))
	}
	return tw.Flush()
}

func orDashText(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes is a byte count in IEC units: "16KiB", "1.5GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + string("KMGTPE"[exp]) + "iB"
}
