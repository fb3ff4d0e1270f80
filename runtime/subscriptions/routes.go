package subscriptions

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"

	"mecha/runtime/appchannel"
)

// ErrInvalidSubscription is wrapped by errors about a subscription that
// cannot be used.
var ErrInvalidSubscription = errors.New("invalid subscription")

var celEnv *cel.Env

func init() {
	var err error
	// Dapr exposes the CloudEvent as the variable "event" (id, source,
	// type, data, and every extension attribute).
	celEnv, err = cel.NewEnv(cel.Variable("event", cel.DynType))
	if err != nil {
		panic(err)
	}
}

type rule struct {
	match string
	prog  cel.Program
	path  string
}

// router picks the route of an event: the first rule whose CEL match is
// true, else the default path. An empty route means drop.
type router struct {
	rules []rule
	def   string
}

func newRouter(s *appchannel.Subscription) (*router, error) {
	r := &router{def: trimPath(s.Route)}
	if s.Routes != nil {
		if s.Routes.Default != "" {
			r.def = trimPath(s.Routes.Default)
		}
		for i, ru := range s.Routes.Rules {
			if strings.TrimSpace(ru.Match) == "" {
				// A rule without match is taken as the default route.
				// (Dapr matches it in its place in the list; the two
				// differ only when it is not the last rule.)
				if r.def == "" {
					r.def = trimPath(ru.Path)
				}
				continue
			}
			ast, iss := celEnv.Compile(ru.Match)
			if iss != nil && iss.Err() != nil {
				return nil, fmt.Errorf("routes.rules[%d].match %q: %v", i, ru.Match, iss.Err())
			}
			prog, err := celEnv.Program(ast)
			if err != nil {
				return nil, fmt.Errorf("routes.rules[%d].match %q: %v", i, ru.Match, err)
			}
			r.rules = append(r.rules, rule{match: ru.Match, prog: prog, path: trimPath(ru.Path)})
		}
	}
	if r.def == "" && len(r.rules) == 0 {
		return nil, fmt.Errorf("route: topic %q has no route: set route, routes.default or routes.rules", s.Topic)
	}
	return r, nil
}

// trimPath normalizes a route to one leading slash; "" stays "" (no route).
func trimPath(p string) string {
	p = strings.TrimSpace(p)
	if p == "" {
		return ""
	}
	return "/" + strings.TrimLeft(p, "/")
}

// needsFields reports whether routing needs the parsed event.
func (r *router) needsFields() bool { return len(r.rules) > 0 }

// route returns the path (with its leading slash) for an event with the
// given attributes; "" means no route.
func (r *router) route(fields map[string]any) (string, error) {
	for _, ru := range r.rules {
		out, _, err := ru.prog.Eval(map[string]any{"event": fields})
		if err != nil {
			// A rule that cannot evaluate on this event (a field it
			// reads is missing) does not match. Dapr 1.14 fails the
			// delivery instead, which retries an event no retry can
			// fix; mecha moves on to the next rule.
			continue
		}
		if b, ok := out.Value().(bool); ok && b {
			return ru.path, nil
		}
	}
	return r.def, nil
}
