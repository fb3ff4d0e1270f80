// Package bindings will hold mecha's own input/output binding components
// (bindings.mecha on the embedded broker). Today the runtime serves
// contrib's bindings (cron, http, kafka), registered in components/.
package bindings
