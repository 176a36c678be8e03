{{/*
Names, labels, the rendered hushscribe.toml, the checks that stop an unusable install, and the
pod parts both Deployments share (security contexts, volumes, environment, init container).
*/}}

{{/* Paths inside every pod: data_dir is a directory on the data volume that the pod's user
owns (files/prepare.py makes it); the models volume is mounted over <data_dir>/models. */}}
{{- define "hushscribe.dataDir" -}}/var/lib/hushscribe{{- end -}}
{{- define "hushscribe.dataSubPath" -}}data{{- end -}}
{{- define "hushscribe.configDir" -}}/etc/hushscribe{{- end -}}
{{- define "hushscribe.keysDir" -}}/run/hushscribe/keys{{- end -}}
{{- define "hushscribe.keysSource" -}}/run/secrets/hushscribe-audit-keys{{- end -}}

{{- define "hushscribe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release alone when it already holds the chart name; at most 49
characters so that "-models-import" (14) still fits in 63. */}}
{{- define "hushscribe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hushscribe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hushscribe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hushscribe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hushscribe.labels" -}}
helm.sh/chart: {{ include "hushscribe.chart" . }}
{{ include "hushscribe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hushscribe
{{- end -}}

{{- define "hushscribe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hushscribe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hushscribe.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}{{- $repo = printf "%s/%s" .Values.image.registry $repo -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Secrets: the chart's own Secret holds what no existingSecret provides.
--------------------------------------------------------------------------------------- */}}
{{- define "hushscribe.secretName" -}}{{ include "hushscribe.fullname" . }}{{- end -}}

{{- define "hushscribe.databaseSecretName" -}}
{{- default (include "hushscribe.secretName" .) .Values.database.existingSecret -}}
{{- end -}}

{{- define "hushscribe.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}database-url{{- end -}}
{{- end -}}

{{- define "hushscribe.authSecretName" -}}
{{- default (include "hushscribe.secretName" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "hushscribe.ldapConfigured" -}}
{{- if dig "auth" "ldap" nil .Values.config -}}true{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Checks that stop rendering with the value to set: included by every template that needs them.
--------------------------------------------------------------------------------------- */}}
{{- define "hushscribe.validate" -}}
{{- if not .Values.database.existingSecret -}}
{{- $url := required "database.url is required (postgresql+psycopg://USER:PASSWORD@HOST:5432/DB), or name a Secret holding it in database.existingSecret: the chart's pods share one external PostgreSQL" .Values.database.url -}}
{{- if not (regexMatch "^postgresql(\\+psycopg)?://" $url) -}}
{{- fail "database.url must be a PostgreSQL URL (postgresql+psycopg://USER:PASSWORD@HOST:5432/DB): the chart's pods share one external PostgreSQL; SQLite serves one machine only" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.probes.sourceCIDRs -}}
{{- fail "probes.sourceCIDRs is required: the kubelet probes /healthz and /readyz from the node, and hushscribe answers 403 to any address outside network.allow, so no pod would become ready. List where probes come from: usually the pod CIDR (the node's bridge or tunnel address) or the nodes' CIDR" -}}
{{- end -}}
{{- $config := .Values.config | default dict -}}
{{- range $key := list "data_dir" "database_url" -}}
{{- if hasKey $config $key -}}
{{- fail (printf "config.%s is set by the chart (the volumes, database.url / database.existingSecret): remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "host" "port" -}}
{{- if hasKey (dig "server" dict $config) $key -}}
{{- fail (printf "config.server.%s is set by the chart (it binds every address of the pod, on api.port / worker.health.port): remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "dir" "keys_dir" -}}
{{- if hasKey (dig "audit" dict $config) $key -}}
{{- fail (printf "config.audit.%s is set by the chart (the data volume, or auditKeys.existingSecret): remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- if dig "auth" "api_keys" nil $config -}}
{{- fail "config.auth.api_keys would put keys in a ConfigMap: move them to secrets.apiKeys (or the api-keys key of secrets.existingSecret)" -}}
{{- end -}}
{{- if dig "auth" "ldap" "bind_password" nil $config -}}
{{- fail "config.auth.ldap.bind_password would put a password in a ConfigMap: move it to secrets.ldapBindPassword (or the ldap-bind-password key of secrets.existingSecret)" -}}
{{- end -}}
{{- if and .Values.worker.autoscaling.enabled (lt (int .Values.worker.autoscaling.maxReplicas) (int .Values.worker.autoscaling.minReplicas)) -}}
{{- fail "worker.autoscaling.maxReplicas is smaller than worker.autoscaling.minReplicas" -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
hushscribe.toml from .Values.config: one dotted key per line (`audio.max_bytes = 2147483648`),
valid TOML 1.0. Scalars and lists go through toJson (a JSON string is a TOML basic string, and
numbers print without Helm's float64 ".0"); a null value leaves the setting at its default.
--------------------------------------------------------------------------------------- */}}
{{- define "hushscribe.tomlLines" -}}
{{- $prefix := .prefix -}}
{{- $table := .table -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- $name := ternary $key (toJson $key) (regexMatch "^[A-Za-z0-9_-]+$" $key) -}}
{{- $path := ternary $name (printf "%s.%s" $prefix $name) (eq $prefix "") -}}
{{- if kindIs "map" $value -}}
{{- if $value -}}
{{- include "hushscribe.tomlLines" (dict "prefix" $path "table" $value) -}}
{{- else -}}
{{- printf "%s = {}\n" $path -}}
{{- end -}}
{{- else if kindIs "slice" $value -}}
{{- range $item := $value -}}
{{- if or (kindIs "map" $item) (kindIs "slice" $item) -}}
{{- fail (printf "config.%s: a list of tables or lists cannot be written to hushscribe.toml by this chart" $path) -}}
{{- end -}}
{{- end -}}
{{- printf "%s = %s\n" $path (toJson $value) -}}
{{- else if not (kindIs "invalid" $value) -}}
{{- printf "%s = %s\n" $path (toJson $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The settings the pods read: .Values.config, with loopback and probes.sourceCIDRs added to
network.allow. */}}
{{- define "hushscribe.toml" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $network := get $config "network" | default dict -}}
{{- $allow := concat (get $network "allow" | default list) .Values.probes.sourceCIDRs (list "127.0.0.0/8" "::1/128") | uniq -}}
{{- $_ := set $network "allow" $allow -}}
{{- $_ := set $config "network" $network -}}
# hushscribe settings (docs/configuration.md), rendered by the Helm chart from .Values.config.
# The chart sets data_dir and database_url in the environment, the ports on the command line.
{{ include "hushscribe.tomlLines" (dict "prefix" "" "table" $config) -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
NetworkPolicy egress: one rule per endpoint the settings name, from explicit CIDRs/peers or,
when the URL's host is an IP address, from the URL itself.
--------------------------------------------------------------------------------------- */}}
{{/* {host, port} of a URL; host without brackets. */}}
{{- define "hushscribe.urlEndpoint" -}}
{{- $u := urlParse . -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $u.host) -}}
{{- dict "host" $u.hostname "port" $port | toJson -}}
{{- end -}}

{{/* CIDR of an IP address host; "" for a host name. */}}
{{- define "hushscribe.hostCIDR" -}}
{{- if regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" . -}}{{ . }}/32
{{- else if contains ":" . -}}{{ . }}/128
{{- end -}}
{{- end -}}

{{/* One egress rule. Input: what (its name in messages), spec (networkPolicy.egress.X), host
and port (from the settings; either may be ""), defaultPort. */}}
{{- define "hushscribe.egressRule" -}}
{{- $cidrs := .spec.cidrs | default list -}}
{{- $peers := .spec.peers | default list -}}
{{- if and (not $cidrs) (not $peers) .host -}}
{{- $cidr := include "hushscribe.hostCIDR" .host -}}
{{- if $cidr -}}{{- $cidrs = list $cidr -}}{{- end -}}
{{- end -}}
{{- if and (not $cidrs) (not $peers) -}}
{{- fail (printf "networkPolicy.egress.%s: name where the %s is (cidrs, or peers for pods in the cluster); it could not be taken from the settings (a host name, or a URL in a Secret). The NetworkPolicy lets the pods reach nothing else; with a host name also set networkPolicy.egress.dns.enabled" .what .what) -}}
{{- end -}}
{{- $ports := .spec.ports | default list -}}
{{- if not $ports -}}{{- $ports = list (default .defaultPort .port) -}}{{- end }}
- to:
  {{- range $cidr := $cidrs }}
    - ipBlock:
        cidr: {{ $cidr | quote }}
  {{- end }}
  {{- with $peers }}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
  {{- range $port := $ports }}
    - protocol: TCP
      port: {{ int $port }}
  {{- end }}
{{- end -}}

{{- define "hushscribe.egress.database" -}}
{{- $host := "" -}}{{- $port := "" -}}
{{- if and .Values.database.url (not .Values.database.existingSecret) -}}
{{- $ep := include "hushscribe.urlEndpoint" .Values.database.url | fromJson -}}
{{- $host = $ep.host -}}{{- $port = $ep.port -}}
{{- end -}}
{{- include "hushscribe.egressRule" (dict "what" "database" "spec" .Values.networkPolicy.egress.database "host" $host "port" $port "defaultPort" 5432) -}}
{{- end -}}

{{- define "hushscribe.egress.ldap" -}}
{{- $ldap := dig "auth" "ldap" nil .Values.config -}}
{{- if $ldap -}}
{{- $url := required "config.auth.ldap.url is required with config.auth.ldap" $ldap.url -}}
{{- $ep := include "hushscribe.urlEndpoint" $url | fromJson -}}
{{- $default := ternary 636 389 (hasPrefix "ldaps://" (lower $url)) -}}
{{- include "hushscribe.egressRule" (dict "what" "ldap" "spec" .Values.networkPolicy.egress.ldap "host" $ep.host "port" $ep.port "defaultPort" $default) -}}
{{- end -}}
{{- end -}}

{{- define "hushscribe.egress.syslog" -}}
{{- $syslog := dig "audit" "syslog" nil .Values.config -}}
{{- if $syslog -}}
{{- $host := required "config.audit.syslog.host is required with config.audit.syslog" $syslog.host -}}
{{- $port := "" -}}{{- if $syslog.port -}}{{- $port = int $syslog.port -}}{{- end -}}
{{- include "hushscribe.egressRule" (dict "what" "syslog" "spec" .Values.networkPolicy.egress.syslog "host" $host "port" $port "defaultPort" 6514) -}}
{{- end -}}
{{- end -}}

{{- define "hushscribe.egress.dns" -}}
{{- if .Values.networkPolicy.egress.dns.enabled }}
- to:
    {{- toYaml .Values.networkPolicy.egress.dns.peers | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Pod parts shared by the API, the workers and the models-import pod.
--------------------------------------------------------------------------------------- */}}
{{- define "hushscribe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hushscribe.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod-level settings: the service account without a token, no service links (Kubernetes
would add HUSHSCRIBE_* variables for a Service whose name starts with hushscribe). */}}
{{- define "hushscribe.podCommon" -}}
serviceAccountName: {{ include "hushscribe.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "hushscribe.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "hushscribe.modelsClaim" -}}
{{- default (printf "%s-models" (include "hushscribe.fullname" .)) .Values.persistence.models.existingClaim -}}
{{- end -}}

{{- define "hushscribe.dataClaim" -}}
{{- default (printf "%s-data" (include "hushscribe.fullname" .)) .Values.persistence.data.existingClaim -}}
{{- end -}}

{{- define "hushscribe.volumes" -}}
- name: config
  configMap:
    name: {{ include "hushscribe.fullname" . }}
    defaultMode: 0444
- name: data
  persistentVolumeClaim:
    claimName: {{ include "hushscribe.dataClaim" . }}
{{- if .Values.persistence.models.enabled }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "hushscribe.modelsClaim" . }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if .Values.auditKeys.existingSecret }}
- name: audit-keys-source
  secret:
    secretName: {{ .Values.auditKeys.existingSecret }}
    defaultMode: 0400
- name: audit-keys
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end -}}

{{/* Mounts of the hushscribe container; modelsWritable only for the models-import pod. */}}
{{- define "hushscribe.volumeMounts" -}}
- name: config
  mountPath: {{ include "hushscribe.configDir" .root }}
  readOnly: true
- name: data
  mountPath: {{ include "hushscribe.dataDir" .root }}
  subPath: {{ include "hushscribe.dataSubPath" .root }}
{{- if .root.Values.persistence.models.enabled }}
- name: models
  mountPath: {{ include "hushscribe.dataDir" .root }}/models
  readOnly: {{ not .modelsWritable }}
{{- end }}
- name: tmp
  mountPath: /tmp
{{- if .root.Values.auditKeys.existingSecret }}
- name: audit-keys
  mountPath: {{ include "hushscribe.keysDir" .root }}
{{- end }}
{{- end -}}

{{/* Runs files/prepare.py: makes data_dir on the data volume, copies the audit keys. */}}
{{- define "hushscribe.initContainer" -}}
- name: prepare
  image: {{ include "hushscribe.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - {{ .Values.image.python }}
    - {{ include "hushscribe.configDir" . }}/prepare.py
    - /volume
    - {{ include "hushscribe.dataSubPath" . }}
    {{- if .Values.auditKeys.existingSecret }}
    - {{ include "hushscribe.keysSource" . }}
    - {{ include "hushscribe.keysDir" . }}
    {{- end }}
  securityContext:
    {{- include "hushscribe.containerSecurityContext" . | nindent 4 }}
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 64Mi
  volumeMounts:
    - name: config
      mountPath: {{ include "hushscribe.configDir" . }}
      readOnly: true
    - name: data
      mountPath: /volume
    {{- if .Values.auditKeys.existingSecret }}
    - name: audit-keys-source
      mountPath: {{ include "hushscribe.keysSource" . }}
      readOnly: true
    - name: audit-keys
      mountPath: {{ include "hushscribe.keysDir" . }}
    {{- end }}
{{- end -}}

{{/* Environment of every hushscribe container; withAuth adds the secrets only the API uses. */}}
{{- define "hushscribe.env" -}}
{{- $root := .root -}}
- name: HUSHSCRIBE_CONFIG
  value: {{ include "hushscribe.configDir" $root }}/hushscribe.toml
- name: HUSHSCRIBE_DATA_DIR
  value: {{ include "hushscribe.dataDir" $root }}
{{- if $root.Values.auditKeys.existingSecret }}
- name: HUSHSCRIBE_AUDIT__KEYS_DIR
  value: {{ include "hushscribe.keysDir" $root }}
{{- end }}
- name: HUSHSCRIBE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hushscribe.databaseSecretName" $root }}
      key: {{ include "hushscribe.databaseSecretKey" $root }}
- name: HOME
  value: /tmp
{{- if .withAuth }}
{{- $existing := $root.Values.secrets.existingSecret }}
{{- if or $existing $root.Values.secrets.adminPassword }}
- name: HUSHSCRIBE_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hushscribe.authSecretName" $root }}
      key: admin-password
      optional: {{ ternary true false (not (empty $existing)) }}
{{- end }}
{{- if or $existing $root.Values.secrets.apiKeys }}
- name: HUSHSCRIBE_AUTH__API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "hushscribe.authSecretName" $root }}
      key: api-keys
      optional: {{ ternary true false (not (empty $existing)) }}
{{- end }}
{{- if and (include "hushscribe.ldapConfigured" $root) (or $existing $root.Values.secrets.ldapBindPassword) }}
- name: HUSHSCRIBE_AUTH__LDAP__BIND_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hushscribe.authSecretName" $root }}
      key: ldap-bind-password
      optional: {{ ternary true false (not (empty $existing)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Probes of a container whose health endpoint is on port name `portName`. */}}
{{- define "hushscribe.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .portName }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: {{ max 1 (div (int .root.Values.probes.startupSeconds) 5) }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .portName }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .portName }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}
