{{/*
Helpers shared by every service. Component-scoped helpers take
(dict "ctx" $ "component" "ingest") so the next services reuse them unchanged.
*/}}

{{- define "sightline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sightline.fullname" -}}
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

{{/* Per-service object names; truncated after the suffix so Service names stay DNS labels. */}}
{{- define "sightline.componentName" -}}
{{- printf "%s-%s" (include "sightline.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sightline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels never change after install: a changed selector is an immutable-field error. */}}
{{- define "sightline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sightline.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "sightline.labels" -}}
helm.sh/chart: {{ include "sightline.chart" .ctx }}
{{ include "sightline.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: sightline
{{- end }}

{{- define "sightline.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "sightline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "sightline.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "sightline.secretName" -}}
{{- .Values.secrets.name | default (include "sightline.fullname" .) }}
{{- end }}

{{/* One env entry read from the credentials Secret: (dict "ctx" $ "env" "NAME" "key" "databaseUrl" "secret" "name"). */}}
{{- define "sightline.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ index .ctx.Values.secrets.keys .key }}
{{- end }}

{{/* Settings every service must agree on; as env vars they win over any sightline.toml. */}}
{{- define "sightline.sharedEnv" -}}
- name: SIGHTLINE__BROKER__PARTITIONS
  value: {{ .Values.broker.partitions | int | quote }}
- name: SIGHTLINE__TELEMETRY__LOG_FORMAT
  value: {{ .Values.telemetry.logFormat | quote }}
{{- with .Values.telemetry.otlpEndpoint }}
- name: SIGHTLINE__TELEMETRY__OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
"true" when an enabled service reads or writes the lake, else empty (stream processor, batch
enricher, query).
*/}}
{{- define "sightline.lakeUsed" -}}
{{- $s := .Values.streamProcessor }}
{{- if or (and $s.enabled (or $s.rollup.enabled $s.archive.enabled)) (and .Values.batchEnricher .Values.batchEnricher.enabled) (and .Values.query .Values.query.enabled) }}true{{ end }}
{{- end }}

{{/*
The S3 lake (`lake.kind = s3`; the local-folder lake is for the single binary) with its
credentials from the Secret: (dict "ctx" $ "secret" "name").
*/}}
{{- define "sightline.lakeEnv" -}}
{{- $s3 := .ctx.Values.lake.s3 -}}
- name: SIGHTLINE__LAKE__KIND
  value: s3
{{- with $s3.endpoint }}
- name: SIGHTLINE__LAKE__S3__ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: SIGHTLINE__LAKE__S3__REGION
  value: {{ required "lake.s3.region is required" $s3.region | quote }}
- name: SIGHTLINE__LAKE__S3__BUCKET
  value: {{ required "lake.s3.bucket is required" $s3.bucket | quote }}
- name: SIGHTLINE__LAKE__S3__FORCE_PATH_STYLE
  value: {{ $s3.forcePathStyle | toString | quote }}
{{ include "sightline.secretEnv" (dict "ctx" .ctx "env" "SIGHTLINE__LAKE__S3__ACCESS_KEY_ID" "key" "lakeAccessKeyId" "secret" .secret) }}
{{ include "sightline.secretEnv" (dict "ctx" .ctx "env" "SIGHTLINE__LAKE__S3__SECRET_ACCESS_KEY" "key" "lakeSecretAccessKey" "secret" .secret) }}
{{- end }}
