package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/source"
)

func newRollbackCmd() *cobra.Command {
	var (
		repo, to, name, email, remote string
		gitUser, gitPasswordFile      string
		sshKey, knownHosts            string
		push                          bool
	)
	cmd := &cobra.Command{
		Use:   "rollback --repo PATH [--to REV | COMMIT...]",
		Short: "Roll back through Git: create revert commits (and push them)",
		Long: `Rollback creates the commits that undo changes, in a local clone, so that
rolling back still goes through Git and review: with COMMIT arguments, one
revert commit each (newest first); with --to REV, one commit that brings the
whole tree back to REV. The work tree must be clean. --push pushes the branch
to its remote; the running reconciler then converges to it.`,
		Example: `  berth rollback --repo . HEAD          # revert the last commit
  berth rollback --repo . --to HEAD~3 --push`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (to == "") == (len(args) == 0) {
				return fmt.Errorf("give either --to REV or the commits to revert")
			}
			head, reverted, err := source.Revert(cmd.Context(), repo, source.RevertOptions{
				To: to, Commits: args, AuthorName: name, AuthorEmail: email, Push: push, Remote: remote,
				Auth: source.Auth{Username: gitUser, PasswordFile: gitPasswordFile, SSHKeyFile: sshKey, KnownHostsFile: knownHosts},
			})
			out := cmd.OutOrStdout()
			if head.SHA != "" {
				for _, c := range reverted {
					fmt.Fprintf(out, "reverted %s %s\n", c.Short(), safeText(c.Subject))
				}
				fmt.Fprintf(out, "new head %s %s\n", head.Short(), safeText(head.Subject))
			}
			if err != nil {
				return err
			}
			if push {
				fmt.Fprintln(out, "pushed")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&repo, "repo", ".", "local clone of the config repository")
	f.StringVar(&to, "to", "", "roll the whole tree back to this revision in one commit")
	f.StringVar(&name, "author-name", "", "commit author (default: Git config user.name, then $GIT_AUTHOR_NAME)")
	f.StringVar(&email, "author-email", "", "commit author email (default: Git config user.email, then $GIT_AUTHOR_EMAIL)")
	f.BoolVar(&push, "push", false, "push the branch after committing")
	f.StringVar(&remote, "remote", "", "remote to push to (default: the branch's remote, else origin)")
	f.StringVar(&gitUser, "git-username", "", "HTTPS user name for --push")
	f.StringVar(&gitPasswordFile, "git-password-file", "", "file with the HTTPS password or token for --push")
	f.StringVar(&sshKey, "ssh-key", "", "SSH private key for --push")
	f.StringVar(&knownHosts, "known-hosts", "", "pinned SSH host keys for --push")
	return cmd
}
