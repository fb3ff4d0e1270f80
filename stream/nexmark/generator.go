// Package nexmark is the Nexmark benchmark for the stream engine: the
// Person/Auction/Bid generator of the Nexmark suite (as Beam's and Flink's
// nexmark generators make them) and the queries q0, q1, q2, q5, q7 and uv
// written as stream jobs. Run feeds generated events straight into a
// job's pipeline with a blackhole sink, as Flink's reference run does;
// RunThroughBroker writes them to a topic and runs the job on it.
package nexmark

import (
	"encoding/json"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Proportions of the event kinds, per 50 events (Nexmark's defaults).
const (
	personProportion  = 1
	auctionProportion = 3
	bidProportion     = 46
	totalProportion   = personProportion + auctionProportion + bidProportion

	// One bid in hotRatio goes to a random recent auction; the others go
	// to the current hot one (Nexmark's hot auction and bidder ratios).
	hotAuctionRatio = 100
	hotBidderRatio  = 100
	// inFlightAuctions is how many recent auctions bids spread over.
	inFlightAuctions = 100
	activePeople     = 1000
	firstPersonID    = 1000
	firstAuctionID   = 1000
	firstCategoryID  = 10
	numCategories    = 5
)

var (
	channels  = []string{"Google", "Facebook", "Baidu", "Apple"}
	firstName = []string{"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
	lastName  = []string{"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
	cities    = []string{"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"}
	states    = []string{"AZ", "CA", "ID", "OR", "WA", "WY"}
)

// Generator makes Nexmark events in event-number order. Event n's time is
// Base + n*1000/Rate ms: Rate events per second of event time (Nexmark's
// first-event rate, 10M/s by default in Flink's runs).
type Generator struct {
	Base int64   // event time of event 0, ms since the epoch
	Rate float64 // events per second of event time
	rnd  *rand.Rand
	n    int64
}

// NewGenerator returns a seeded generator.
func NewGenerator(base int64, rate float64, seed uint64) *Generator {
	return &Generator{Base: base, Rate: rate, rnd: rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))}
}

// Next returns the next event as the fields a job sees: event_type is 0
// for a person, 1 for an auction and 2 for a bid (as in Flink's Nexmark
// table), and the kind's fields follow Nexmark's schema (dateTime in ms
// since the epoch).
func (g *Generator) Next() (fields map[string]any, ts int64) {
	n := g.n
	g.n++
	ts = g.Base + int64(float64(n)*1000/g.Rate)
	epoch, offset := n/totalProportion, n%totalProportion
	switch {
	case offset < personProportion:
		return g.person(epoch*personProportion+offset, ts), ts
	case offset < personProportion+auctionProportion:
		return g.auction(n, epoch*auctionProportion+offset-personProportion, ts), ts
	}
	return g.bid(n, ts), ts
}

// Count is the number of events made so far.
func (g *Generator) Count() int64 { return g.n }

func (g *Generator) person(id int64, ts int64) map[string]any {
	return map[string]any{
		"event_type":   int64(0),
		"id":           firstPersonID + id,
		"name":         firstName[g.rnd.IntN(len(firstName))] + " " + lastName[g.rnd.IntN(len(lastName))],
		"emailAddress": "p" + strconv.FormatInt(id, 10) + "@example.com",
		"creditCard":   strconv.Itoa(1000+g.rnd.IntN(9000)) + " " + strconv.Itoa(1000+g.rnd.IntN(9000)),
		"city":         cities[g.rnd.IntN(len(cities))],
		"state":        states[g.rnd.IntN(len(states))],
		"dateTime":     ts,
		"extra":        "",
	}
}

// lastPerson is the id of the newest person at event n.
func lastPerson(n int64) int64 {
	epoch, offset := n/totalProportion, n%totalProportion
	return firstPersonID + epoch*personProportion + min(offset, personProportion-1)
}

// lastAuction is the id of the newest auction at event n.
func lastAuction(n int64) int64 {
	epoch, offset := n/totalProportion, n%totalProportion
	off := offset - personProportion
	if off < 0 {
		off = -1 // none yet in this epoch: the previous epoch's last
		epoch--
		off = auctionProportion - 1
	}
	if off >= auctionProportion {
		off = auctionProportion - 1
	}
	return firstAuctionID + max(0, epoch*auctionProportion+off)
}

func (g *Generator) auction(n, id int64, ts int64) map[string]any {
	// The seller: a recent person, or a hot one.
	seller := lastPerson(n)
	if g.rnd.IntN(hotBidderRatio) > 0 {
		seller = seller / hotBidderRatio * hotBidderRatio
	} else {
		seller -= g.rnd.Int64N(min(activePeople, seller-firstPersonID+1))
	}
	initial := g.price()
	return map[string]any{
		"event_type":  int64(1),
		"id":          firstAuctionID + id,
		"itemName":    "item-" + strconv.FormatInt(id, 10),
		"description": "",
		"initialBid":  initial,
		"reserve":     initial + g.price(),
		"dateTime":    ts,
		"expires":     ts + 10_000 + g.rnd.Int64N(20_000),
		"seller":      seller,
		"category":    int64(firstCategoryID + g.rnd.IntN(numCategories)),
		"extra":       "",
	}
}

func (g *Generator) bid(n int64, ts int64) map[string]any {
	auction := lastAuction(n)
	if g.rnd.IntN(hotAuctionRatio) > 0 {
		auction = auction / hotAuctionRatio * hotAuctionRatio
	} else {
		auction -= g.rnd.Int64N(min(inFlightAuctions, auction-firstAuctionID+1))
	}
	bidder := lastPerson(n)
	if g.rnd.IntN(hotBidderRatio) > 0 {
		bidder = bidder/hotBidderRatio*hotBidderRatio + 1
	} else {
		bidder -= g.rnd.Int64N(min(activePeople, bidder-firstPersonID+1))
	}
	return map[string]any{
		"event_type": int64(2),
		"auction":    auction,
		"bidder":     bidder,
		"price":      g.price(),
		"channel":    channels[g.rnd.IntN(len(channels))],
		"url":        "https://www.nexmark.com/item.htm?query=1",
		"dateTime":   ts,
		"extra":      "",
	}
}

// price is in cents, log-distributed as Nexmark's: mostly small, some
// large.
func (g *Generator) price() int64 {
	return int64(100 * math.Pow(10, g.rnd.Float64()*6))
}

// Encode is an event as the JSON a topic carries, keys sorted as
// encoding/json writes a map. It appends to dst; a generated event's
// values are strings without characters to escape, int64s and nothing
// else, which is all it handles (anything else goes through
// encoding/json).
func Encode(dst []byte, fields map[string]any) []byte {
	keys := sortedKeys(fields)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		switch v := fields[k].(type) {
		case int64:
			dst = strconv.AppendInt(dst, v, 10)
		case string:
			dst = appendString(dst, v)
		default:
			b, _ := json.Marshal(v)
			dst = append(dst, b...)
		}
	}
	return append(dst, '}')
}

// kindKeys are the keys of each event kind, sorted: Encode uses them
// instead of sorting an event's keys, when they are its keys.
var kindKeys = func() [][]string {
	var out [][]string
	g := NewGenerator(0, 1, 1)
	for range totalProportion {
		f, _ := g.Next()
		keys := slices.Sorted(maps.Keys(f))
		if !slices.ContainsFunc(out, func(k []string) bool { return slices.Equal(k, keys) }) {
			out = append(out, keys)
		}
	}
	return out
}()

// sortedKeys returns fields' keys, sorted.
func sortedKeys(fields map[string]any) []string {
	for _, keys := range kindKeys {
		if len(keys) != len(fields) {
			continue
		}
		all := true
		for _, k := range keys {
			if _, ok := fields[k]; !ok {
				all = false
				break
			}
		}
		if all {
			return keys
		}
	}
	return slices.Sorted(maps.Keys(fields))
}

// appendString appends s as a JSON string: as it is between quotes when
// it is printable ASCII without a quote or a backslash (every string the
// generator makes), else quoted by strconv.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return strconv.AppendQuote(dst, s)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
