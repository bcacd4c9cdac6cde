{{/*
Names: chart name, full name (release-qualified, max 63 chars), chart label.
*/}}
{{- define "sailcast-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sailcast-gateway.fullname" -}}
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

{{/* Name of the ops (metrics) Service: fullname truncated so the suffix fits. */}}
{{- define "sailcast-gateway.metricsServiceName" -}}
{{- printf "%s-metrics" (include "sailcast-gateway.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "sailcast-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment selector is immutable). */}}
{{- define "sailcast-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sailcast-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sailcast-gateway.labels" -}}
helm.sh/chart: {{ include "sailcast-gateway.chart" . }}
{{ include "sailcast-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sailcast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sailcast-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sailcast-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository:tag, or repository:tag@digest when a digest is given. */}}
{{- define "sailcast-gateway.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must be a pinned version, not \"latest\"" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* NATS credentials Secret: the user's, or the one this chart creates. */}}
{{- define "sailcast-gateway.natsSecretName" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else }}
{{- printf "%s-nats" (include "sailcast-gateway.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "sailcast-gateway.createNatsSecret" -}}
{{- if and (ne .Values.nats.auth.mode "none") (not .Values.nats.auth.existingSecret) }}true{{- end }}
{{- end }}

{{/* JWT key Secret (connectionChecks.jwt): the user's, or the one this chart creates. */}}
{{- define "sailcast-gateway.jwtSecretName" -}}
{{- if .Values.connectionChecks.jwt.existingSecret }}
{{- .Values.connectionChecks.jwt.existingSecret }}
{{- else }}
{{- printf "%s-jwt" (include "sailcast-gateway.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "sailcast-gateway.jwtEnabled" -}}
{{- if eq .Values.connectionChecks.beforeConnect.mode "jwt" }}true{{- end }}
{{- end }}

{{- define "sailcast-gateway.createJwtSecret" -}}
{{- if and (include "sailcast-gateway.jwtEnabled" .) (not .Values.connectionChecks.jwt.existingSecret) }}true{{- end }}
{{- end }}

{{/* HTTP API keys Secret (httpApi): the user's, or the one this chart creates. */}}
{{- define "sailcast-gateway.apiSecretName" -}}
{{- if .Values.httpApi.existingSecret }}
{{- .Values.httpApi.existingSecret }}
{{- else }}
{{- printf "%s-api" (include "sailcast-gateway.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "sailcast-gateway.createApiSecret" -}}
{{- if and .Values.httpApi.enabled (not .Values.httpApi.existingSecret) }}true{{- end }}
{{- end }}

{{/* Any Secret created by this chart (its checksum rolls the pods). */}}
{{- define "sailcast-gateway.createsSecrets" -}}
{{- if or (include "sailcast-gateway.createNatsSecret" .) (include "sailcast-gateway.createJwtSecret" .) (include "sailcast-gateway.createApiSecret" .) }}true{{- end }}
{{- end }}

{{/* Shutdown budget: what the pod needs between deletion and SIGKILL. */}}
{{- define "sailcast-gateway.drainBudgetSeconds" -}}
{{- add .Values.drain.preStopSleepSeconds .Values.drain.delaySeconds .Values.drain.timeoutSeconds }}
{{- end }}

{{- define "sailcast-gateway.terminationGracePeriodSeconds" -}}
{{- $budget := include "sailcast-gateway.drainBudgetSeconds" . | int }}
{{- $explicit := .Values.drain.terminationGracePeriodSeconds | int }}
{{- if gt $explicit 0 }}
{{- if lt $explicit $budget }}
{{- fail (printf "drain.terminationGracePeriodSeconds (%d) is below preStopSleepSeconds + delaySeconds + timeoutSeconds (%d): Kubernetes would kill the gateway before its sockets are drained" $explicit $budget) }}
{{- end }}
{{- $explicit }}
{{- else }}
{{- add $budget .Values.drain.marginSeconds }}
{{- end }}
{{- end }}

{{/* Mount points inside the container for NATS credential and TLS files. */}}
{{- define "sailcast-gateway.natsAuthDir" -}}/etc/sailcast/nats-auth{{- end }}
{{- define "sailcast-gateway.natsTlsDir" -}}/etc/sailcast/nats-tls{{- end }}

{{/* Mount point and file name of the RS256 public key (connectionChecks.jwt, RS256). */}}
{{- define "sailcast-gateway.jwtDir" -}}/etc/sailcast/jwt{{- end }}
{{- define "sailcast-gateway.jwtPublicKeyItem" -}}public-key.pem{{- end }}

{{/*
PodDisruptionBudget: the `minAvailable: ...` or `maxUnavailable: ...` line (minAvailable
wins when both are set), refused when it would block every voluntary disruption, so no
node drain could finish. The checks read the value's text, so a number from a values
file (float64), from --set (int64) or from --set-string ("2") is treated alike.
Percentages are scaled as the disruption controller does (rounded up) against the
smallest replica count: replicaCount, or autoscaling.minReplicas with the HPA on.
*/}}
{{- define "sailcast-gateway.pdbBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $replicas := .Values.replicaCount | int }}
{{- $replicasFrom := "replicaCount" }}
{{- if .Values.autoscaling.enabled }}
{{- $replicas = .Values.autoscaling.minReplicas | int }}
{{- $replicasFrom = "autoscaling.minReplicas" }}
{{- end }}
{{- $field := "maxUnavailable" }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}{{ $field = "minAvailable" }}{{ end }}
{{- $raw := index $pdb $field }}
{{- if kindIs "invalid" $raw }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, or enabled: false" }}
{{- end }}
{{- $text := toString $raw }}
{{- $pods := 0 }}
{{- $shown := $text }}
{{- if regexMatch "^[0-9]{1,9}$" $text }}
{{- $pods = atoi $text }}
{{- else if regexMatch "^[0-9]{1,3}%$" $text }}
{{- $percent := trimSuffix "%" $text | atoi }}
{{- if gt $percent 100 }}
{{- fail (printf "podDisruptionBudget.%s (%s) must be at most 100%%" $field $text) }}
{{- end }}
{{- $pods = div (add (mul $percent $replicas) 99) 100 }}
{{- $shown = printf "%s of %d pods, rounded up: %d" $text $replicas $pods }}
{{- else }}
{{- fail (printf "podDisruptionBudget.%s (%s) must be a whole number or a percentage such as \"50%%\"" $field $text) }}
{{- end }}
{{- if and (eq $field "minAvailable") (ge $pods $replicas) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%s) must be below the replica count (%s %d), or no node could ever be drained" $shown $replicasFrom $replicas) }}
{{- end }}
{{- if and (eq $field "maxUnavailable") (lt $pods 1) }}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%s) must allow at least one pod, or no node could ever be drained" $shown) }}
{{- end }}
{{- $field }}: {{ if hasSuffix "%" $text }}{{ $text | quote }}{{ else }}{{ $pods }}{{ end }}
{{- end }}
