package replica

import (
	"errors"
	"slices"
	"testing"
)

func TestEpochHistoryEndOffsetFor(t *testing.T) {
	h := EpochHistory{{1, 0}, {3, 10}, {4, 25}}
	const end = 40
	tests := []struct {
		name      string
		h         EpochHistory
		e         Epoch
		wantEpoch Epoch
		wantEnd   int64
		wantOK    bool
	}{
		{"epoch 0 asks nothing", h, 0, 0, 0, false},
		{"empty history", nil, 3, 0, 0, false},
		{"first epoch ends where the next starts", h, 1, 1, 10, true},
		{"missing epoch answers the one below", h, 2, 1, 10, true},
		{"middle epoch", h, 3, 3, 25, true},
		{"newest epoch ends at the log end", h, 4, 4, end, true},
		{"newer than any answers the newest", h, 9, 4, end, true},
		{"older than any: nothing of it here", EpochHistory{{5, 100}}, 2, 2, 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, off, ok := tt.h.EndOffsetFor(tt.e, end)
			if e != tt.wantEpoch || off != tt.wantEnd || ok != tt.wantOK {
				t.Fatalf("EndOffsetFor(%d) = %d, %d, %v; want %d, %d, %v", tt.e, e, off, ok, tt.wantEpoch, tt.wantEnd, tt.wantOK)
			}
		})
	}
}

func TestEpochHistoryChanges(t *testing.T) {
	tests := []struct {
		name    string
		h       EpochHistory
		change  func(*EpochHistory) error
		want    EpochHistory
		wantErr error
	}{
		{"assign to empty", nil, func(h *EpochHistory) error { return h.Assign(2, 5) }, EpochHistory{{2, 5}}, nil},
		{"assign newer", EpochHistory{{1, 0}}, func(h *EpochHistory) error { return h.Assign(2, 5) }, EpochHistory{{1, 0}, {2, 5}}, nil},
		{"assign same epoch is covered", EpochHistory{{1, 0}}, func(h *EpochHistory) error { return h.Assign(1, 7) }, EpochHistory{{1, 0}}, nil},
		{"assign older epoch", EpochHistory{{2, 0}}, func(h *EpochHistory) error { return h.Assign(1, 7) }, EpochHistory{{2, 0}}, ErrEpochRegress},
		{"assign before the last start", EpochHistory{{1, 9}}, func(h *EpochHistory) error { return h.Assign(2, 7) }, EpochHistory{{1, 9}}, ErrNotContiguous},
		{"assign at the last start replaces an empty epoch", EpochHistory{{1, 0}, {2, 9}}, func(h *EpochHistory) error { return h.Assign(3, 9) }, EpochHistory{{1, 0}, {3, 9}}, nil},
		{"truncate from a start", EpochHistory{{1, 0}, {2, 5}, {3, 9}}, func(h *EpochHistory) error { h.TruncateFrom(5); return nil }, EpochHistory{{1, 0}}, nil},
		{"truncate inside an epoch keeps it", EpochHistory{{1, 0}, {2, 5}}, func(h *EpochHistory) error { h.TruncateFrom(7); return nil }, EpochHistory{{1, 0}, {2, 5}}, nil},
		{"trim keeps the covering entry", EpochHistory{{1, 0}, {2, 5}, {3, 9}}, func(h *EpochHistory) error { h.TrimTo(6); return nil }, EpochHistory{{2, 6}, {3, 9}}, nil},
		{"trim at a start", EpochHistory{{1, 0}, {2, 5}}, func(h *EpochHistory) error { h.TrimTo(5); return nil }, EpochHistory{{2, 5}}, nil},
		{"trim below everything", EpochHistory{{2, 5}}, func(h *EpochHistory) error { h.TrimTo(3); return nil }, EpochHistory{{2, 5}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := slices.Clone(tt.h)
			err := tt.change(&h)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(h, tt.want) {
				t.Fatalf("history = %v, want %v", h, tt.want)
			}
		})
	}
}

// batch is a test batch of n records with the given payload.
func batch(base int64, e Epoch, n int32, data string) Batch {
	return Batch{Base: base, Epoch: e, Count: n, Data: []byte(data)}
}

// memLogOf builds a MemLog from batches.
func memLogOf(t testing.TB, batches ...Batch) *MemLog {
	t.Helper()
	l := NewMemLog()
	if err := l.Append(batches); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestMemLogAppend(t *testing.T) {
	tests := []struct {
		name    string
		batches []Batch
		wantErr error
	}{
		{"contiguous", []Batch{batch(0, 1, 2, "a"), batch(2, 1, 1, "b"), batch(3, 2, 1, "c")}, nil},
		{"gap", []Batch{batch(0, 1, 2, "a"), batch(3, 1, 1, "b")}, ErrNotContiguous},
		{"not at the end", []Batch{batch(1, 1, 1, "a")}, ErrNotContiguous},
		{"epoch goes down", []Batch{batch(0, 2, 1, "a"), batch(1, 1, 1, "b")}, ErrEpochRegress},
		{"no records", []Batch{batch(0, 1, 0, "a")}, ErrInvalid},
		{"no epoch", []Batch{batch(0, 0, 1, "a")}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewMemLog()
			err := l.Append(tt.batches)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && (l.EndOffset() != 0 || len(l.Batches()) != 0 || len(l.Epochs()) != 0) {
				t.Fatalf("a rejected append changed the log: end %d, %d batches", l.EndOffset(), len(l.Batches()))
			}
		})
	}
	l := memLogOf(t, batch(0, 1, 2, "a"), batch(2, 1, 1, "b"), batch(3, 3, 4, "c"))
	if got, want := l.Epochs(), (EpochHistory{{1, 0}, {3, 3}}); !slices.Equal(got, want) {
		t.Fatalf("history = %v, want %v", got, want)
	}
	if l.EndOffset() != 7 {
		t.Fatalf("end = %d, want 7", l.EndOffset())
	}
}

func TestMemLogAppendCopies(t *testing.T) {
	l := NewMemLog()
	data := []byte("abc")
	if err := l.Append([]Batch{{Base: 0, Epoch: 1, Count: 1, Data: data}}); err != nil {
		t.Fatal(err)
	}
	data[0] = 'x'
	if got := string(l.Batches()[0].Data); got != "abc" {
		t.Fatalf("log kept the caller's bytes: %q", got)
	}
	read, _ := l.Read(0, 10, nil)
	if err := l.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := l.Append([]Batch{batch(0, 1, 1, "zzz")}); err != nil {
		t.Fatal(err)
	}
	if got := string(read[0].Data); got != "abc" {
		t.Fatalf("a batch read before a truncation changed: %q", got)
	}
}

func TestMemLogRead(t *testing.T) {
	l := memLogOf(t, batch(0, 1, 2, "aaaa"), batch(2, 1, 1, "bbbb"), batch(3, 2, 3, "cccc"))
	tests := []struct {
		name     string
		offset   int64
		maxBytes int
		want     []int64 // batch bases
		wantErr  error
	}{
		{"all", 0, 100, []int64{0, 2, 3}, nil},
		{"budget of two", 0, 8, []int64{0, 2}, nil},
		{"one always goes", 0, 1, []int64{0}, nil},
		{"inside a batch starts at it", 4, 100, []int64{3}, nil},
		{"at the end", 6, 100, nil, nil},
		{"past the end", 7, 100, nil, ErrOffsetOutOfRange},
		{"negative", -1, 100, nil, ErrOffsetOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Read(tt.offset, tt.maxBytes, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(bases(got), tt.want) {
				t.Fatalf("bases = %v, want %v", bases(got), tt.want)
			}
		})
	}
}

func bases(bs []Batch) []int64 {
	var s []int64
	for _, b := range bs {
		s = append(s, b.Base)
	}
	return s
}

func TestMemLogTruncateResetTrim(t *testing.T) {
	mk := func() *MemLog {
		return memLogOf(t, batch(0, 1, 2, "a"), batch(2, 2, 1, "b"), batch(3, 3, 3, "c"))
	}
	tests := []struct {
		name      string
		change    func(*MemLog) error
		wantErr   error
		wantStart int64
		wantEnd   int64
		wantHist  EpochHistory
	}{
		{"truncate at a boundary", func(l *MemLog) error { return l.Truncate(3) }, nil, 0, 3, EpochHistory{{1, 0}, {2, 2}}},
		{"truncate everything", func(l *MemLog) error { return l.Truncate(0) }, nil, 0, 0, nil},
		{"truncate at the end", func(l *MemLog) error { return l.Truncate(6) }, nil, 0, 6, EpochHistory{{1, 0}, {2, 2}, {3, 3}}},
		{"truncate inside a batch drops it whole", func(l *MemLog) error { return l.Truncate(4) }, nil, 0, 3, EpochHistory{{1, 0}, {2, 2}}},
		{"truncate past the end", func(l *MemLog) error { return l.Truncate(7) }, ErrOffsetOutOfRange, 0, 6, EpochHistory{{1, 0}, {2, 2}, {3, 3}}},
		{"reset", func(l *MemLog) error { return l.Reset(10) }, nil, 10, 10, nil},
		{"trim", func(l *MemLog) error { return l.TrimTo(3) }, nil, 3, 6, EpochHistory{{3, 3}}},
		{"trim all", func(l *MemLog) error { return l.TrimTo(6) }, nil, 6, 6, EpochHistory{{3, 6}}},
		{"trim inside a batch drops it whole", func(l *MemLog) error { return l.TrimTo(1) }, nil, 2, 6, EpochHistory{{2, 2}, {3, 3}}},
		{"trim below the start", func(l *MemLog) error { _ = l.TrimTo(2); return l.TrimTo(1) }, nil, 2, 6, EpochHistory{{2, 2}, {3, 3}}},
		{"trim past the end", func(l *MemLog) error { return l.TrimTo(7) }, ErrOffsetOutOfRange, 0, 6, EpochHistory{{1, 0}, {2, 2}, {3, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mk()
			err := tt.change(l)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if l.StartOffset() != tt.wantStart || l.EndOffset() != tt.wantEnd {
				t.Fatalf("log [%d, %d), want [%d, %d)", l.StartOffset(), l.EndOffset(), tt.wantStart, tt.wantEnd)
			}
			if !slices.Equal(l.Epochs(), tt.wantHist) {
				t.Fatalf("history = %v, want %v", l.Epochs(), tt.wantHist)
			}
		})
	}
}

func TestReadCommitted(t *testing.T) {
	l := memLogOf(t, batch(0, 1, 2, "a"), batch(2, 1, 1, "b"), batch(3, 2, 3, "c"))
	tests := []struct {
		name    string
		offset  int64
		hw      int64
		want    []int64
		wantErr error
	}{
		{"below the watermark only", 0, 3, []int64{0, 2}, nil},
		{"nothing committed", 0, 0, nil, nil},
		{"at the watermark", 3, 3, nil, nil},
		{"all committed", 0, 6, []int64{0, 2, 3}, nil},
		{"past the end", 9, 3, nil, ErrOffsetOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCommitted(l, tt.offset, 100, tt.hw, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(bases(got), tt.want) {
				t.Fatalf("bases = %v, want %v", bases(got), tt.want)
			}
		})
	}
}
