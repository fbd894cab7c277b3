package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/lxd"
)

func newImageCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage LXD images berth's specs refer to",
	}
	var (
		alias    string
		pruneOld bool
	)
	imp := &cobra.Command{
		Use:   "import --alias NAME METADATA.tar.gz ROOTFS.tar.gz",
		Short: "Import a split image (offline) and point an alias at it",
		Long: `Import uploads a split image (metadata tarball + rootfs tarball) to LXD and
points the alias at it, for sites without an image server. It is idempotent:
an image already there is not uploaded again, and an alias already pointing
at it is left alone. --prune-old deletes the image the alias pointed to
before (running instances keep their own copy).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if alias == "" {
				return errors.New("--alias is required")
			}
			ctx := cmd.Context()
			fp, err := fingerprint(args[0], args[1])
			if err != nil {
				return err
			}
			c, err := g.lxd.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			if err := importImage(ctx, c, out, fp, args[0], args[1]); err != nil {
				return err
			}
			if err := pointAlias(ctx, c, out, alias, fp, pruneOld); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s -> %s\n", safeText(alias), fp[:12])
			return nil
		},
	}
	imp.Flags().StringVar(&alias, "alias", "", "alias to point at the image (e.g. berth/debian-docker)")
	imp.Flags().BoolVar(&pruneOld, "prune-old", false, "delete the image the alias pointed to before")
	cmd.AddCommand(imp)
	return cmd
}

// importImage uploads the split image of fingerprint fp unless LXD has it.
func importImage(ctx context.Context, c *lxd.Client, out io.Writer, fp, metaFile, rootfsFile string) error {
	if _, _, err := c.GetImage(ctx, fp); !errors.Is(err, lxd.ErrNotFound) {
		return err
	}
	meta, err := os.Open(metaFile)
	if err != nil {
		return err
	}
	defer meta.Close()
	rootfs, err := os.Open(rootfsFile)
	if err != nil {
		return err
	}
	defer rootfs.Close()
	if _, err := c.ImportImage(ctx, meta, rootfs, lxd.ImageImportOptions{Fingerprint: fp}); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	fmt.Fprintf(out, "imported %s\n", fp[:12])
	return nil
}

// pointAlias makes alias point at the image fp: created, moved, or left
// alone when it already does. With pruneOld, the image it pointed to
// before is deleted.
func pointAlias(ctx context.Context, c *lxd.Client, out io.Writer, alias, fp string, pruneOld bool) error {
	cur, etag, err := c.GetImageAlias(ctx, alias)
	switch {
	case errors.Is(err, lxd.ErrNotFound):
		return c.CreateImageAlias(ctx, alias, fp, "")
	case err != nil || cur.Target == fp:
		return err
	}
	if err := c.UpdateImageAlias(ctx, alias, fp, cur.Description, etag); err != nil {
		return err
	}
	if pruneOld {
		if err := c.DeleteImage(ctx, cur.Target); err != nil && !errors.Is(err, lxd.ErrNotFound) {
			return fmt.Errorf("delete the old image %s: %w", cur.Target[:12], err)
		}
		fmt.Fprintf(out, "deleted the old image %s\n", cur.Target[:12])
	}
	return nil
}

// fingerprint is LXD's fingerprint of a split image: sha256(metadata||rootfs).
func fingerprint(files ...string) (string, error) {
	h := sha256.New()
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("read %s: %w", name, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
