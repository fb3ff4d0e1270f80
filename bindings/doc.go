// Package bindings holds mecha's own input/output binding components:
// bindings.mecha on the embedded broker is in bindings/brokerbinding.
// contrib's bindings (cron, http, kafka) are registered in components/.
package bindings
