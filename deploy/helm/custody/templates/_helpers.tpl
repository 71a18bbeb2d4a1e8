{{/*
Names, labels, the checks every template relies on, and custody.toml.
*/}}

{{- define "custody.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custody.fullname" -}}
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

{{/* Cluster-scoped objects (the ClusterRole and its binding) carry the namespace too, so that
releases of the same name in two namespaces do not collide. */}}
{{- define "custody.clusterScopedName" -}}
{{- printf "%s-%s" .Release.Namespace (include "custody.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "custody.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custody.selectorLabels" -}}
app.kubernetes.io/name: {{ include "custody.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "custody.labels" -}}
helm.sh/chart: {{ include "custody.chart" . }}
{{ include "custody.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: custody
{{- end }}

{{- define "custody.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "custody.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "custody.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "custody.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "custody.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "custody.signingKeySecretName" -}}
{{- default (printf "%s-signing-key" (include "custody.fullname" .)) .Values.signingKey.existingSecret }}
{{- end }}

{{/* Whether a signing key Secret is mounted. */}}
{{- define "custody.hasSigningKey" -}}
{{- if or .Values.signingKey.existingSecret .Values.signingKey.key }}true{{ end }}
{{- end }}

{{/* The Secret holding the cluster mode's credentials the chart was given inline. */}}
{{- define "custody.credentialsSecretName" -}}
{{- printf "%s-cluster-credentials" (include "custody.fullname" .) }}
{{- end }}

{{/* Where custody reads its signing key: cluster mode names the file, on one machine it is in
the data directory. */}}
{{- define "custody.signingKeyFile" -}}
{{- $paths := include "custody.paths" . | fromYaml }}
{{- if .Values.cluster.enabled }}
{{- printf "%s/signing.key" $paths.signingKeyDir }}
{{- else }}
{{- printf "%s/signing.key" $paths.dataDir }}
{{- end }}
{{- end }}

{{/* Whether the data directory is a PersistentVolumeClaim (one machine only). */}}
{{- define "custody.persistent" -}}
{{- if and .Values.persistence.enabled (not .Values.cluster.enabled) }}true{{ end }}
{{- end }}

{{/* Where the pod keeps what custody reads and writes. */}}
{{- define "custody.paths" -}}
configDir: /etc/custody/config
tlsDir: /etc/custody/tls
signingKeySourceDir: /etc/custody/signing-key
signingKeyDir: /etc/custody/signing
clustersDir: /etc/custody/clusters
dataDir: /var/lib/custody
{{- end }}

{{/* Refuses values that cannot work, with the reason. Included by every template that depends
on them. */}}
{{- define "custody.validate" -}}
{{- if not (or .Values.tls.existingSecret (and .Values.tls.cert .Values.tls.key)) }}
{{- fail "tls: set tls.existingSecret (a kubernetes.io/tls Secret) or both tls.cert and tls.key (PEM, e.g. --set-file tls.cert=custody.crt --set-file tls.key=custody.key)" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.cluster.enabled) }}
{{- fail "replicaCount: more than one replica needs cluster mode (cluster.enabled=true with PostgreSQL and S3); on one machine custody's data directory belongs to one process" }}
{{- end }}
{{- $c := .Values.config }}
{{- if not (or $c.oidc (and $c.service_accounts $c.service_accounts.enabled)) }}
{{- fail "config: no config.oidc issuer and config.service_accounts.enabled is false: nobody could log in" }}
{{- end }}
{{- range $key := list "data_dir" "server" "admin" "clusters" "cluster" }}
{{- if hasKey $c $key }}
{{- fail (printf "config.%s: the chart sets it (see values.yaml: clusterName, extraClusters, cluster, tls, metrics.port)" $key) }}
{{- end }}
{{- end }}
{{- if .Values.cluster.enabled }}
{{- if not (include "custody.hasSigningKey" .) }}
{{- fail "cluster mode: every replica signs with the same key; set signingKey.existingSecret or signingKey.key (custody key --generate signing.key)" }}
{{- end }}
{{- $pg := .Values.cluster.postgres }}
{{- if not (or $pg.url $pg.existingSecret) }}
{{- fail "cluster mode: set cluster.postgres.url or cluster.postgres.existingSecret" }}
{{- end }}
{{- $s3 := .Values.cluster.objectStore }}
{{- if not (and $s3.endpoint $s3.bucket) }}
{{- fail "cluster mode: set cluster.objectStore.endpoint and cluster.objectStore.bucket" }}
{{- end }}
{{- if not (or $s3.existingSecret (and $s3.accessKeyId $s3.secretAccessKey)) }}
{{- fail "cluster mode: set cluster.objectStore.accessKeyId and secretAccessKey, or cluster.objectStore.existingSecret" }}
{{- end }}
{{- end }}
{{- if not .Values.podSecurityContext.fsGroup }}
{{- fail "podSecurityContext.fsGroup: custody (not root) reads its mounted Secrets and writes its data volume through this group; keep it set" }}
{{- end }}
{{- range .Values.extraClusters }}
{{- if or (not .name) (not .secretName) }}
{{- fail "extraClusters: each entry needs a name and a secretName" }}
{{- end }}
{{- if eq .name $.Values.clusterName }}
{{- fail (printf "extraClusters: %q is clusterName already" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
custody.toml: .Values.config with the keys the chart owns. Rendered by the small TOML writer
below rather than toToml, because Helm reads every number in a values file as a float and
toToml would write 10 as 10.0, which custody's whole-number keys refuse.
*/}}
{{- define "custody.config" -}}
{{- $paths := include "custody.paths" . | fromYaml }}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "data_dir" $paths.dataDir }}
{{- if not (hasKey $cfg "gateway_id") }}
{{- $_ := set $cfg "gateway_id" (include "custody.fullname" .) }}
{{- end }}
{{- $_ := set $cfg "server" (dict
  "listen" "0.0.0.0:8443"
  "tls_cert" (printf "%s/tls.crt" $paths.tlsDir)
  "tls_key" (printf "%s/tls.key" $paths.tlsDir)
  "proxy_protocol" (.Values.proxyProtocol | default false)) }}
{{- $_ := set $cfg "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) }}
{{- $clusters := list (dict "name" .Values.clusterName "in_cluster" true) }}
{{- range .Values.extraClusters }}
{{- $entry := dict "name" .name "kubeconfig" (printf "%s/%s/kubeconfig" $paths.clustersDir .name) }}
{{- if .context }}{{ $_ := set $entry "context" .context }}{{ end }}
{{- $clusters = append $clusters $entry }}
{{- end }}
{{- $_ := set $cfg "clusters" $clusters }}
{{- if .Values.cluster.enabled }}
{{- $c := .Values.cluster }}
{{- $pg := dict "url" "" "max_connections" $c.postgres.maxConnections }}
{{- if $c.postgres.ca }}{{ $_ := set $pg "ca_file" (printf "%s/postgres-ca.pem" $paths.configDir) }}{{ end }}
{{- $s3 := dict "endpoint" $c.objectStore.endpoint "bucket" $c.objectStore.bucket "region" $c.objectStore.region "prefix" $c.objectStore.prefix }}
{{- if $c.objectStore.ca }}{{ $_ := set $s3 "ca_file" (printf "%s/s3-ca.pem" $paths.configDir) }}{{ end }}
{{- $_ := set $cfg "cluster" (dict
  "replica_id" (include "custody.fullname" .)
  "signing_key_file" (include "custody.signingKeyFile" .)
  "lease_seconds" $c.leaseSeconds
  "drain_seconds" $c.drainSeconds
  "postgres" $pg
  "object_store" $s3) }}
{{- end -}}
# custody.toml, rendered by the custody Helm chart from its values (docs/configuration.md).
{{- if .Values.cluster.enabled }}
# Cluster mode: the replica id (the pod's name), the PostgreSQL URL and the S3 keys come from
# the environment (CUSTODY_CLUSTER_REPLICA_ID, CUSTODY_CLUSTER_POSTGRES_URL,
# CUSTODY_CLUSTER_S3_ACCESS_KEY_ID, CUSTODY_CLUSTER_S3_SECRET_ACCESS_KEY), set from Secrets.
{{- end }}
{{ include "custody.toml.table" (dict "path" (list) "table" $cfg) }}
{{- end }}

{{/* A TOML key: bare when it may be, else quoted. */}}
{{- define "custody.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* A dotted table name. */}}
{{- define "custody.toml.path" -}}
{{- $keys := list }}
{{- range . }}{{ $keys = append $keys (include "custody.toml.key" .) }}{{ end }}
{{- join "." $keys }}
{{- end }}

{{/* Whether a value is an array of tables (written as [[name]] sections). */}}
{{- define "custody.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) (kindIs "map" (first .)) }}true{{ end }}
{{- end }}

{{/* A value: strings as JSON strings (valid TOML basic strings), whole numbers without a
fraction, arrays inline, maps as inline tables. */}}
{{- define "custody.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "custody.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" . }}{ {{- $first := true }}{{ range $k, $v := . }}{{ if not (kindIs "invalid" $v) }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ include "custody.toml.key" $k }} = {{ include "custody.toml.value" $v }}{{ end }}{{ end }} }
{{- else }}{{ fail (printf "config: cannot write %v (%s) in TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* A table's body: its plain keys, then its tables and arrays of tables, each under its
header. */}}
{{- define "custody.toml.table" -}}
{{- $path := .path }}
{{- range $k, $v := .table }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "custody.toml.isTableArray" $v)) }}
{{ include "custody.toml.key" $k }} = {{ include "custody.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- $sub := append $path $k }}
{{- if kindIs "map" $v }}

[{{ include "custody.toml.path" $sub }}]
{{- include "custody.toml.table" (dict "path" $sub "table" $v) }}
{{- else if include "custody.toml.isTableArray" $v }}
{{- range $item := $v }}

[[{{ include "custody.toml.path" $sub }}]]
{{- include "custody.toml.table" (dict "path" $sub "table" $item) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
