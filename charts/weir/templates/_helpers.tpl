{{/*
Names, labels and the node agent's configuration, shared by the templates.
*/}}

{{/* The chart name ("weir"), or nameOverride. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else the release name when it already
contains the chart name, else "<release>-<chart>". Truncated to leave room for "-operator".
*/}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "weir.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment, ServiceAccount, Service, roles and ConfigMap. */}}
{{- define "weir.operator.fullname" -}}
{{- printf "%s-operator" (include "weir.fullname" .) -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: weir
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator pods' selector labels (immutable in the Deployment: keep them few). */}}
{{- define "weir.operator.selectorLabels" -}}
app.kubernetes.io/name: weir-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
The labels the operator puts on the agent's pods (operator/src/controllers/daemonset/render.rs,
`selector_labels`); the PodMonitor selects them.
*/}}
{{- define "weir.agent.selectorLabels" -}}
app.kubernetes.io/name: weir-agent
app.kubernetes.io/component: agent
{{- end -}}

{{/* `<repository>:<tag>`, the tag defaulting to the chart's appVersion. */}}
{{- define "weir.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
The node agent's configuration: the operator's AgentConfig
(operator/src/controllers/daemonset/config.rs) as YAML, one field per `agent.*` value.
Optional fields are left out when their value is empty, so that the operator's defaults and
its `Option`s apply. The DaemonSet lives in the release namespace, beside the ServiceAccount
and the Role that lets the operator manage it.
*/}}
{{- define "weir.agentConfig" -}}
{{- $a := .Values.agent -}}
{{- $mac := required "agent.defaultMac is required: the MAC address of the next hop (usually the router) that encapsulated packets are sent to, e.g. --set agent.defaultMac=02:00:00:00:00:01" $a.defaultMac -}}
{{- $api := dict "host" $a.api.host "port" (int $a.api.port) "allowCidrs" (default list $a.api.allowCidrs) "readOnly" $a.api.readOnly -}}
{{- if $a.api.tokenSecret.name -}}
{{- $_ := set $api "tokenSecret" (dict "name" $a.api.tokenSecret.name "key" $a.api.tokenSecret.key) -}}
{{- end -}}
{{- if $a.api.tlsSecret -}}
{{- $_ := set $api "tlsSecret" $a.api.tlsSecret -}}
{{- end -}}
{{- if $a.api.clientCaSecret.name -}}
{{- if not $a.api.tlsSecret -}}
{{- fail "agent.api.clientCaSecret needs agent.api.tlsSecret: client certificates (mTLS) are a TLS option" -}}
{{- end -}}
{{- $_ := set $api "clientCaSecret" (dict "name" $a.api.clientCaSecret.name "key" $a.api.clientCaSecret.key) -}}
{{- end -}}
{{- if eq (int $a.api.port) (int $a.metrics.port) -}}
{{- fail "agent.metrics.port equals agent.api.port: the agents use the host network, so the two listeners need two ports" -}}
{{- end -}}
{{- $config := dict
  "namespace" .Release.Namespace
  "name" $a.name
  "image" (include "weir.image" (dict "image" $a.image "chart" .Chart))
  "imagePullPolicy" $a.image.pullPolicy
  "imagePullSecrets" (default list $a.imagePullSecrets)
  "serviceAccountName" $a.serviceAccount.name
  "interface" $a.interface
  "defaultMac" $mac
  "xdpMode" $a.xdpMode
  "nodeSelector" (default dict $a.nodeSelector)
  "tolerations" (default list $a.tolerations)
  "resources" (default dict $a.resources)
  "api" $api
  "metrics" (dict "port" (int $a.metrics.port))
  "bpffsPath" $a.bpffsPath
  "stateDir" $a.stateDir
  "logLevel" $a.logLevel
  "extraArgs" (default list $a.extraArgs)
-}}
{{- if $a.priorityClassName -}}
{{- $_ := set $config "priorityClassName" $a.priorityClassName -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The labels of the operator's objects and pods: weir.labels and its name and component. */}}
{{- define "weir.operator.labels" -}}
{{ include "weir.labels" . }}
app.kubernetes.io/name: weir-operator
app.kubernetes.io/component: operator
{{- end -}}

{{/* The labels of the agent's ServiceAccount, roles and policy. */}}
{{- define "weir.agent.labels" -}}
{{ include "weir.labels" . }}
{{ include "weir.agent.selectorLabels" . }}
{{- end -}}
