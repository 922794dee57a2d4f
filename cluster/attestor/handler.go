package attestor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"go.uber.org/zap"

	"github.com/certagent/certagent/protocol/attestation"
)

// Handler serves POST attestation.BeginPath and attestation.FinishPath.
// Serve it over TLS with a certificate nodes verify against what their
// user-data carries.
func (a *Attestor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+attestation.BeginPath, func(w http.ResponseWriter, r *http.Request) {
		var req attestation.BeginRequest
		serve(a, w, r, StepBegin, &req, func(ctx context.Context) (any, outcome) {
			rsp, o := a.begin(ctx, &req)
			return rsp, o
		})
	})
	mux.HandleFunc("POST "+attestation.FinishPath, func(w http.ResponseWriter, r *http.Request) {
		var req attestation.FinishRequest
		serve(a, w, r, StepFinish, &req, func(ctx context.Context) (any, outcome) {
			rsp, o := a.finish(ctx, &req)
			return rsp, o
		})
	})
	return mux
}

// serve decodes the request into in, runs call, and answers, logs and
// reports its outcome: every refusal is logged with its reason.
func serve(a *Attestor, w http.ResponseWriter, r *http.Request, step Step, in any, call func(context.Context) (any, outcome)) {
	var (
		rsp any
		o   outcome
	)
	if err := decode(w, r, in); err != nil {
		o.refusal = attestation.Refuse(attestation.ReasonBadRequest, "%v", err)
	} else {
		rsp, o = call(r.Context())
	}
	reason, detail := attestation.Reason(""), ""
	log := a.log.With(zap.String("step", string(step)), zap.String("remote", r.RemoteAddr))
	if o.node != "" {
		log = log.With(zap.String("node", o.node))
	}
	if o.claimed != "" {
		log = log.With(zap.String("claimed_node", o.claimed))
	}
	if o.ekHash != "" {
		log = log.With(zap.String("ek_hash", o.ekHash))
	}
	if o.refusal != nil {
		reason, detail = o.refusal.Reason, o.refusal.Message
		fields := []zap.Field{zap.String("reason", string(reason)), zap.String("detail", detail)}
		if o.cause != nil {
			fields = append(fields, zap.Error(o.cause))
		}
		log.Warn("attestation refused", fields...)
		writeJSON(w, reason.HTTPStatus(), o.refusal)
	} else {
		if step == StepFinish {
			log.Info("attestation passed; certificate issued")
		} else {
			log.Debug("attestation begun")
		}
		writeJSON(w, http.StatusOK, rsp)
	}
	a.observer.Observe(Outcome{Step: step, Reason: reason, Node: o.node, ClaimedNode: o.claimed, EKHash: o.ekHash, Detail: detail, Cause: o.cause})
}

func decode(w http.ResponseWriter, r *http.Request, into any) error {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return errors.New("the body must be application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, attestation.MaxBodyBytes))
	if err := dec.Decode(into); err != nil {
		return errors.New("the body is not a valid message: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
