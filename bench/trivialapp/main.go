// Command trivialapp is the app behind mecha in the invoke benchmark: it
// answers every request with 200 "ok" and does nothing else, so the figure
// measures the runtime's hop, not the app.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address")
	flag.Parse()
	h := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/dapr/subscribe" {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		ctx.SetBodyString("ok")
	}
	if err := fasthttp.ListenAndServe(*addr, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
