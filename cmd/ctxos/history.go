package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/reconcile"
)

func init() { register(newHistoryCmd) }

// nodeHistory is one node's answer to GET /v1/history.
type nodeHistory struct {
	Node  string           `json:"node"`
	Steps []reconcile.Step `json:"steps"`
}

// historyAnswer is what `ctxos history -o json` prints: the steps of every
// node that answered, and the nodes that did not.
type historyAnswer struct {
	Steps      []historyStep     `json:"steps"`
	Unanswered map[string]string `json:"unanswered,omitempty"` // node → why
}

type historyStep struct {
	Node string `json:"node"`
	reconcile.Step
}

// serveHistory answers GET /v1/history?ctx=&resource=&since=&limit= from
// this node's journal.
func serveHistory(node string, j *reconcile.Journal) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := reconcile.HistoryFilter{CTX: q.Get("ctx"), Resource: q.Get("resource")}
		if s := q.Get("since"); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				writeHTTPJSON(w, http.StatusBadRequest, map[string]string{"error": "since: want an RFC 3339 time"})
				return
			}
			f.Since = t
		}
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				writeHTTPJSON(w, http.StatusBadRequest, map[string]string{"error": "limit: want a number ≥ 0"})
				return
			}
			f.Limit = n
		}
		steps, err := j.History(f)
		if err != nil {
			writeHTTPJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeHTTPJSON(w, http.StatusOK, nodeHistory{Node: node, Steps: steps})
	})
}

func newHistoryCmd() *cobra.Command {
	var (
		f        *clientFlags
		ctxName  string
		nodeName string
		since    time.Duration
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show every step transition of the DSM, cluster-wide",
		Long: `Show the step transitions (pending, running, done, failed, waiting) that
the reconcilers recorded, from every live node's journal, oldest first. Each
node keeps its full history on disk; this command asks every member through
its API and says which nodes did not answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			members, err := f.client().Members(ctx)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			q := url.Values{}
			if ctxName != "" {
				q.Set("ctx", ctxName)
			}
			if since > 0 {
				q.Set("since", time.Now().Add(-since).UTC().Format(time.RFC3339Nano))
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			ans := collectHistory(ctx, members, nodeName, q)
			if f.json() {
				return printJSON(cmd.OutOrStdout(), ans)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tNODE\tRESOURCE\tACTION\tSTATE\tGEN\tATTEMPT\tERROR")
			for _, s := range ans.Steps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.At.Local().Format("2006-01-02 15:04:05.000"),
					s.Node, s.Resource, s.Action, s.State, s.Generation, s.Attempt, s.Error)
			}
			tw.Flush()
			names := make([]string, 0, len(ans.Unanswered))
			for n := range ans.Unanswered {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(cmd.ErrOrStderr(), "node %s did not answer: %s\n", n, ans.Unanswered[n])
			}
			return nil
		},
	}
	f = addClientFlags(cmd)
	cmd.Flags().StringVar(&ctxName, "ctx", "", "only the steps of this CTX's instances")
	cmd.Flags().StringVar(&nodeName, "node", "", "only this node")
	cmd.Flags().DurationVar(&since, "since", 0, "only transitions in this last span, e.g. 1h")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many transitions per node (the newest)")
	return cmd
}

// collectHistory asks every member (or only node) for its history in
// parallel and merges the answers by time.
func collectHistory(ctx context.Context, members []cluster.Member, node string, q url.Values) historyAnswer {
	ans := historyAnswer{Unanswered: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range members {
		if node != "" && m.Name != node {
			continue
		}
		if m.State != cluster.StateAlive || m.API == "" {
			ans.Unanswered[m.Name] = string(m.State)
			continue
		}
		wg.Add(1)
		go func(m cluster.Member) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var h nodeHistory
			err := cluster.NewClient(m.API).Do(cctx, http.MethodGet, "/v1/history?"+q.Encode(), nil, &h)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ans.Unanswered[m.Name] = err.Error()
				return
			}
			for _, s := range h.Steps {
				ans.Steps = append(ans.Steps, historyStep{Node: m.Name, Step: s})
			}
		}(m)
	}
	wg.Wait()
	if node != "" && len(ans.Steps) == 0 && len(ans.Unanswered) == 0 {
		found := false
		for _, m := range members {
			found = found || m.Name == node
		}
		if !found {
			ans.Unanswered[node] = "not a member"
		}
	}
	sort.SliceStable(ans.Steps, func(i, j int) bool {
		if !ans.Steps[i].At.Equal(ans.Steps[j].At) {
			return ans.Steps[i].At.Before(ans.Steps[j].At)
		}
		return ans.Steps[i].Node < ans.Steps[j].Node
	})
	if len(ans.Unanswered) == 0 {
		ans.Unanswered = nil
	}
	return ans
}
