{{/* Names shared by every template. */}}
{{- define "spot-rebalancer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spot-rebalancer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "spot-rebalancer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "spot-rebalancer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* selectorLabels takes (list $ "component"). */}}
{{- define "spot-rebalancer.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "spot-rebalancer.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "spot-rebalancer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "spot-rebalancer.webhookService" -}}
{{- printf "%s-webhook" (include "spot-rebalancer.fullname" .) }}
{{- end }}

{{- define "spot-rebalancer.caSecret" -}}
{{- printf "%s-ca" (include "spot-rebalancer.fullname" .) }}
{{- end }}

{{/* The Secret the webhook serves from, whatever the certs mode. */}}
{{- define "spot-rebalancer.servingSecret" -}}
{{- if eq .Values.certs.mode "external" }}
{{- required "certs.external.secretName is required with certs.mode external" .Values.certs.external.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "spot-rebalancer.fullname" .) }}
{{- end }}
{{- end }}

{{/* The config file every component reads. */}}
{{- define "spot-rebalancer.config" -}}
{{- if not (has .Values.certs.mode (list "self-managed" "cert-manager" "external")) }}
{{- fail (printf "certs.mode %q: must be self-managed, cert-manager or external" .Values.certs.mode) }}
{{- end }}
{{- if or (le (float64 .Values.controller.kubeAPIQPS) 0.0) (le (int .Values.controller.kubeAPIBurst) 0) }}
{{- fail (printf "controller.kubeAPIQPS %v and controller.kubeAPIBurst %v: both must be positive" .Values.controller.kubeAPIQPS .Values.controller.kubeAPIBurst) }}
{{- end }}
{{- $r := .Values.rebalancer }}
{{- $base := dict
  "apiVersion" "spot-rebalancer.io/v1alpha1"
  "kind" "Config"
  "webhook" (dict
    "port" (int .Values.webhook.port)
    "namespace" .Release.Namespace
    "excludedNamespaces" (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludedNamespaces | uniq))
  "certs" (dict
    "mode" (ternary "self-managed" "external" (eq .Values.certs.mode "self-managed"))
    "serviceName" (include "spot-rebalancer.webhookService" .)
    "caSecretName" (include "spot-rebalancer.caSecret" .)
    "servingSecretName" (include "spot-rebalancer.servingSecret" .)
    "webhookConfigurations" (list (include "spot-rebalancer.fullname" .))
    "caValidity" .Values.certs.caValidity
    "servingValidity" .Values.certs.servingValidity
    "certDir" "/etc/spot-rebalancer/certs")
  "rebalancer" (dict
    "dryRun" $r.dryRun
    "replacement" $r.replacement
    "retire" $r.retire
    "maxConcurrentNodes" (int $r.maxConcurrentNodes)
    "maxParallelEvictions" (int $r.maxParallelEvictions)
    "deadlineSafety" $r.deadlineSafety
    "forceAtDeadline" $r.forceAtDeadline
    "maxGraceAtDeadline" $r.maxGraceAtDeadline
    "excludeFromLoadBalancers" $r.excludeFromLoadBalancers
    "surge" $r.surge)
  "agent" (dict "pollInterval" .Values.agent.pollInterval)
  "aws" (dict
    "queue" (dict "deleteUnknown" .Values.aws.queue.deleteUnknown "keepRejected" .Values.aws.queue.keepRejected)
    "ec2" (dict
      "describeInstances" .Values.aws.ec2.describeInstances
      "pollSpotRequests" .Values.aws.ec2.pollSpotRequests
      "interval" .Values.aws.ec2.interval)) }}
{{- with .Values.aws.region }}{{ $_ := set $base.aws "region" . }}{{ end }}
{{- with .Values.aws.queue.url }}{{ $_ := set $base.aws.queue "url" . }}{{ end }}
{{- with .Values.aws.queue.accounts }}{{ $_ := set $base.aws.queue "accounts" . }}{{ end }}
{{- with .Values.agent.imdsEndpoint }}{{ $_ := set $base.agent "imdsEndpoint" . }}{{ end }}
{{- toYaml (mergeOverwrite $base (deepCopy .Values.config)) }}
{{- end }}

{{/* The ServiceAccount of a component: takes (list $ "component"). */}}
{{- define "spot-rebalancer.serviceAccountName" -}}
{{- $ := index . 0 }}
{{- $component := index . 1 }}
{{- $names := dict }}
{{- range $c := list "controller" "webhook" "agent" }}
{{- $name := default (printf "%s-%s" (include "spot-rebalancer.fullname" $) $c) (index $.Values $c "serviceAccount" "name") }}
{{- if or (hasKey $names $name) (eq $name (printf "%s-migrate" (include "spot-rebalancer.fullname" $))) }}
{{- fail (printf "%s.serviceAccount.name %q: every component needs a ServiceAccount of its own (their rights and policies differ)" $c $name) }}
{{- end }}
{{- $_ := set $names $name $c }}
{{- end }}
{{- default (printf "%s-%s" (include "spot-rebalancer.fullname" $) $component) (index $.Values $component "serviceAccount" "name") }}
{{- end }}

{{/* A component's container security context: the restricted defaults,
with the component's securityContext value over them (the user and the
seccomp profile are the pod's). Takes (list $ "component"). */}}
{{- define "spot-rebalancer.containerSecurityContext" -}}
{{- $ := index . 0 }}
{{- $defaults := dict
  "allowPrivilegeEscalation" false
  "readOnlyRootFilesystem" true
  "capabilities" (dict "drop" (list "ALL")) }}
{{- toYaml (mergeOverwrite $defaults (deepCopy (dig (index . 1) "securityContext" dict $.Values.AsMap))) }}
{{- end }}

{{/* A component's pod security context: the restricted defaults (non-root
UID and GID 65532, RuntimeDefault seccomp) with its podSecurityContext value
over them. Takes (list $ "component"). */}}
{{- define "spot-rebalancer.podSecurityContext" -}}
{{- $ := index . 0 }}
{{- $defaults := dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $defaults (deepCopy (dig (index . 1) "podSecurityContext" dict $.Values.AsMap))) }}
{{- end }}

{{/* A component's pod labels: its podLabels value, under the selector
labels (which win). Takes (list $ "component"). */}}
{{- define "spot-rebalancer.podLabels" -}}
{{- $ := index . 0 }}
{{- $selector := include "spot-rebalancer.selectorLabels" . | fromYaml }}
{{- toYaml (merge $selector (deepCopy (dig (index . 1) "podLabels" dict $.Values.AsMap))) }}
{{- end }}

{{/* Anti-affinity spreading one component's replicas across nodes. */}}
{{- define "spot-rebalancer.spread" -}}
{{- $ := index . 0 }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "spot-rebalancer.selectorLabels" . | nindent 12 }}
{{- end }}
