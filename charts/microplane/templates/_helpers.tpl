{{/* Names. */}}
{{- define "microplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "microplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "microplane.operator.fullname" -}}
{{- printf "%s-operator" (include "microplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "microplane.gateway.fullname" -}}
{{- printf "%s-gateway" (include "microplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "microplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (dict "ctx" $ "component" "operator"); component may be empty. */}}
{{- define "microplane.labels" -}}
helm.sh/chart: {{ include "microplane.chart" .ctx }}
{{ include "microplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: microplane
{{- end -}}

{{- define "microplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "microplane.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "microplane.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Sync credentials, in one place. Gateways present their projected ServiceAccount token (audience
.Values.sync.audience); the operator checks it with a TokenReview and admits only the gateway's
ServiceAccount.
*/}}
{{- define "microplane.sync.tokenDir" -}}/var/run/microplane/sync{{- end -}}

{{- define "microplane.sync.host" -}}
{{- printf "%s.%s.svc" (include "microplane.operator.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "microplane.sync.endpoint" -}}
{{- printf "%s://%s:8082" (ternary "https" "http" .Values.sync.tls.enabled) (include "microplane.sync.host" .) -}}
{{- end -}}

{{- define "microplane.sync.caDir" -}}/var/run/microplane/sync-ca{{- end -}}

{{- define "microplane.operator.syncArgs" -}}
- --sync-address=0.0.0.0:8082
- --sync-auth=token-review
- --sync-audience={{ .Values.sync.audience }}
- --sync-allowed-service-accounts={{ .Release.Namespace }}/{{ include "microplane.gateway.fullname" . }}
{{- if .Values.sync.tls.enabled }}
- --sync-tls-secret={{ .Values.sync.tls.secretName }}
- --sync-tls-dns-names={{ include "microplane.sync.host" . }},{{ include "microplane.operator.fullname" . }}.{{ .Release.Namespace }},{{ include "microplane.operator.fullname" . }}
{{- end }}
{{- end -}}

{{- define "microplane.gateway.syncArgs" -}}
- --sync-endpoint={{ include "microplane.sync.endpoint" . }}
- --sync-token-file={{ include "microplane.sync.tokenDir" . }}/token
{{- if .Values.sync.tls.enabled }}
- --sync-ca-file={{ include "microplane.sync.caDir" . }}/ca.crt
{{- end }}
{{- end -}}

{{/* The projected token volume of the gateway pod. */}}
{{- define "microplane.gateway.syncTokenVolume" -}}
- name: sync-token
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          audience: {{ .Values.sync.audience }}
          expirationSeconds: {{ .Values.sync.tokenExpirationSeconds }}
          path: token
{{- if .Values.sync.tls.enabled }}
# The sync CA only (never the keys in the same Secret); the operator creates the Secret on start,
# until then the kubelet retries the mount.
- name: sync-ca
  secret:
    secretName: {{ .Values.sync.tls.secretName }}
    defaultMode: 0444
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end -}}

{{/* Graceful shutdown and sync-staleness flags of the gateway. */}}
{{- define "microplane.gateway.shutdownArgs" -}}
- --shutdown-delay-seconds={{ .Values.gateway.shutdownDelaySeconds }}
- --drain-timeout-seconds={{ .Values.gateway.drainTimeoutSeconds }}
- --sync-stale-seconds={{ .Values.gateway.syncStaleSeconds }}
{{- with .Values.gateway.trustedProxies }}
- --trusted-proxies={{ join "," . }}
{{- end }}
{{- end -}}

{{/* The restricted pod security standard, for both Deployments. */}}
{{- define "microplane.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "microplane.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "microplane.gateway.url" -}}
{{- if .Values.gateway.url -}}
{{- .Values.gateway.url -}}
{{- else -}}
{{- printf "http://%s.%s" (include "microplane.gateway.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}
