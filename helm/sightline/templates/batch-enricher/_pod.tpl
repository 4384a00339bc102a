{{/*
The pod of every batch-enricher job: (dict "ctx" $ "scope" $scope "args" (list …) "name" "daily"
"extraEnv" (list …)). Jobs exit when done; a pod killed halfway is resumed by the next attempt
(the run's finished tenant-days are skipped), so restartPolicy Never with a backoffLimit is safe.
*/}}
{{- define "sightline.batchPod" -}}
{{- $ := .ctx }}
{{- $b := $.Values.batchEnricher }}
{{- $secret := include "sightline.secretName" $ }}
metadata:
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/batch-enricher/configmap.yaml") $ | sha256sum }}
    {{- with $b.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "sightline.labels" .scope | nindent 4 }}
    {{- with $b.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "sightline.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $.Values.serviceAccount.automountToken }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: batch-{{ .name }}
      image: {{ include "sightline.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: {{ concat (list "--config" "/etc/sightline/sightline.toml" "batch") .args | toJson }}
      env:
        - name: SIGHTLINE__BATCH__PARALLELISM
          value: {{ $b.parallelism | int | quote }}
        {{- if $b.ledgerEndpoint }}
        - name: SIGHTLINE__BATCH__LEDGER_ENDPOINT
          value: {{ $b.ledgerEndpoint | quote }}
        {{- else if $.Values.etlMetrics.enabled }}
        # Runs and stages to the run ledger (etl-metrics' Service), through an outbox.
        - name: SIGHTLINE__BATCH__LEDGER_ENDPOINT
          value: "http://{{ include "sightline.componentName" (dict "ctx" $ "component" "etl-metrics") }}:{{ $.Values.etlMetrics.service.port }}"
        {{- end }}
        {{- include "sightline.sharedEnv" $ | nindent 8 }}
        {{- include "sightline.secretEnv" (dict "ctx" $ "env" "SIGHTLINE__DATABASE__URL" "key" "databaseUrl" "secret" $secret) | nindent 8 }}
        {{- include "sightline.lakeEnv" (dict "ctx" $ "secret" $secret) | nindent 8 }}
        {{- with .extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $b.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $b.resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/sightline
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: config
      configMap:
        name: {{ include "sightline.componentName" (dict "ctx" $ "component" "batch") }}
    - name: tmp
      emptyDir: {}
  {{- with $b.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $b.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $b.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
