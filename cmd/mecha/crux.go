package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

const cruxUsage = `Usage:
  mecha crux [-o json] status    Crux as this runtime sees it: its place (host, guest,
                                 server, client), the cluster's members with the slots
                                 each leads and holds, leaderless and moving slots, and
                                 where this runtime's operations went
  mecha crux drain [MEMBER]      move MEMBER's leaderships, then its replicas, to the
                                 other members (default: this runtime's member)
  mecha crux undrain [MEMBER]    cancel a drain (what has moved stays moved)

Flags (before the command):
  --admin host:port   mecha run's metrics port (default 127.0.0.1:9090)
  -o table|json       the output (default table)
`

// cruxCmd reads the Crux status of a running mecha.
func cruxCmd(args []string, stdout, stderr io.Writer) int {
	fs, admin, output := adminFlags("mecha crux", cruxUsage, stderr)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() >= 1 && (fs.Arg(0) == "drain" || fs.Arg(0) == "undrain") && fs.NArg() <= 2 {
		body, _ := json.Marshal(map[string]any{"member": fs.Arg(1), "cancel": fs.Arg(0) == "undrain"})
		out, ok := adminCall("mecha crux", *admin, "POST", "http://"+*admin+"/v1.0-alpha1/crux/drain", string(body), stderr)
		if !ok {
			return 1
		}
		writeJSON(stdout, out)
		return 0
	}
	if fs.NArg() != 1 || fs.Arg(0) != "status" {
		fmt.Fprint(stderr, cruxUsage)
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "mecha crux: -o %q: want table or json\n", *output)
		return 2
	}
	out, ok := adminCall("mecha crux", *admin, "GET", "http://"+*admin+"/v1.0-alpha1/crux/status", "", stderr)
	if !ok {
		return 1
	}
	if *output == "table" {
		if err := cruxTable(stdout, out); err == nil {
			return 0
		}
	}
	writeJSON(stdout, out)
	return 0
}

// cruxTable prints the status: a summary, then a member a line.
func cruxTable(w io.Writer, body []byte) error {
	var st struct {
		Mode         string `json:"mode"`
		Member       string `json:"member"`
		ClusterID    string `json:"clusterId"`
		MapVersion   uint64 `json:"mapVersion"`
		Problem      string `json:"problem"`
		ControlPlane *struct {
			Leader string   `json:"leader"`
			Term   uint64   `json:"term"`
			Voters []string `json:"voters"`
		} `json:"controlPlane"`
		Members []struct {
			ID         string   `json:"id"`
			Addr       string   `json:"addr"`
			Roles      []string `json:"roles"`
			State      string   `json:"state"`
			Draining   bool     `json:"draining"`
			Restarting bool     `json:"restarting"`
			Leaders    int      `json:"leaders"`
			Replicas   int      `json:"replicas"`
		} `json:"members"`
		Slots struct {
			Total           int  `json:"total"`
			Leaderless      int  `json:"leaderless"`
			UnderReplicated int  `json:"underReplicated"`
			Moving          int  `json:"moving"`
			Balanced        bool `json:"balanced"`
		} `json:"slots"`
		Moves []struct {
			Slot  int    `json:"slot"`
			From  string `json:"from"`
			To    string `json:"to"`
			Phase string `json:"phase"`
		} `json:"moves"`
		Routed struct {
			Local       int64 `json:"local"`
			Remote      int64 `json:"remote"`
			Moved       int64 `json:"moved"`
			Unavailable int64 `json:"unavailable"`
		} `json:"routed"`
		Replication *struct {
			SlotsLagging  int     `json:"slotsLagging"`
			MaxLagRecords int64   `json:"maxLagRecords"`
			MaxLagMs      float64 `json:"maxLagMs"`
			Fetched       int64   `json:"fetchedRecords"`
			Copies        int64   `json:"copies"`
		} `json:"replication"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return err
	}
	fmt.Fprintf(w, "this runtime: %s, member %s\n", st.Mode, st.Member)
	cluster := st.ClusterID
	if cluster == "" {
		cluster = "(none yet)"
	}
	fmt.Fprintf(w, "cluster:      %s, map version %d\n", cluster, st.MapVersion)
	if st.Problem != "" {
		fmt.Fprintf(w, "problem:      %s\n", st.Problem)
	}
	if cp := st.ControlPlane; cp != nil {
		leader := cp.Leader
		if leader == "" {
			leader = "(none)"
		}
		fmt.Fprintf(w, "control plane: leader %s, term %d, voters %s\n", leader, cp.Term, strings.Join(cp.Voters, ", "))
	}
	balanced := "balanced"
	if !st.Slots.Balanced {
		balanced = "not balanced"
	}
	fmt.Fprintf(w, "slots:        %d, %d leaderless, %d under-replicated, %d moving, %s\n", st.Slots.Total, st.Slots.Leaderless, st.Slots.UnderReplicated, st.Slots.Moving, balanced)
	fmt.Fprintf(w, "routed here:  %d local, %d remote, %d moved, %d unavailable\n", st.Routed.Local, st.Routed.Remote, st.Routed.Moved, st.Routed.Unavailable)
	if rp := st.Replication; rp != nil {
		fmt.Fprintf(w, "replication:  %d led slots lagging, at most %d records and %.1f ms behind; %d records fetched, %d slot copies installed here\n", rp.SlotsLagging, rp.MaxLagRecords, rp.MaxLagMs, rp.Fetched, rp.Copies)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tROLES\tSTATE\tLEADS\tHOLDS")
	for _, m := range st.Members {
		state := m.State
		switch {
		case m.Draining:
			state += " (draining)"
		case m.Restarting:
			state += " (restarting)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", m.ID, m.Addr, strings.Join(m.Roles, ","), state, m.Leaders, m.Replicas)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Moves) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tFROM\tTO\tPHASE")
		for _, mv := range st.Moves {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", mv.Slot, mv.From, mv.To, mv.Phase)
		}
		return tw.Flush()
	}
	return nil
}
