{{- define "catalio-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "catalio-operator.labels" -}}
{{ include "catalio-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The labels of one component's pods: pass (dict "root" . "component" "server"). */}}
{{- define "catalio-operator.componentSelectorLabels" -}}
{{ include "catalio-operator.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* One component's ServiceAccount: pass (dict "root" . "component" "server"). */}}
{{- define "catalio-operator.serviceAccountName" -}}
{{- $name := ternary .root.Values.serviceAccount.controllerName .root.Values.serviceAccount.serverName (eq .component "controller") -}}
{{- if .root.Values.serviceAccount.create -}}
{{- default (printf "%s-%s" (include "catalio-operator.fullname" .root) .component) $name -}}
{{- else -}}
{{- default "default" $name -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.serviceHost" -}}
{{- printf "%s.%s.svc" (include "catalio-operator.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "catalio-operator.baseUrl" -}}
{{- printf "%s://%s:%d" (ternary "https" "http" .Values.tls.enabled) (include "catalio-operator.serviceHost" .) (int .Values.service.port) -}}
{{- end -}}

{{- define "catalio-operator.tokenUrl" -}}
{{- if .Values.tokenUrl -}}
{{- .Values.tokenUrl -}}
{{- else -}}
{{- printf "%s/oauth/token" (include "catalio-operator.baseUrl" .) -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.tlsSecret" -}}
{{- default (printf "%s-tls" (include "catalio-operator.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "catalio-operator.signingKeySecret" -}}
{{- printf "%s-signing-keys" (include "catalio-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "catalio-operator.leaderLease" -}}
{{- printf "%s-leader" (include "catalio-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What the controller does in every namespace it watches. */}}
{{- define "catalio-operator.controllerRules" -}}
- apiGroups: [catalio.ai]
  resources: [apicredentials]
  # patch: spec.revoked, for credentials with revokeWhenUnused (in the
  # spec, where the API server's rule keeps anyone from undoing it).
  verbs: [get, list, watch, patch]
- apiGroups: [catalio.ai]
  resources: [apicredentials/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on the Secrets it creates.
- apiGroups: [catalio.ai]
  resources: [apicredentials/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.rbac.restartTargets }}
# Rolls spec.rotation.restartTargets after a rotation (pod template
# annotation, as kubectl rollout restart does).
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, list, patch]
{{- end }}
{{- end -}}

{{/* What the servers do in every namespace they watch: no Secrets. */}}
{{- define "catalio-operator.serverRules" -}}
- apiGroups: [catalio.ai]
  resources: [apicredentials]
  verbs: [get, list, watch]
# status.lastUsedAt only: status writers cannot plant a secret (the hashes
# there are keyed with a key status writers do not have).
- apiGroups: [catalio.ai]
  resources: [apicredentials/status]
  verbs: [patch]
# The JSON:API's data: read through watches, written by POST, PATCH and
# DELETE (which archives, so no delete verb).
- apiGroups: [catalio.ai]
  resources: {{ include "catalio-operator.businessResources" . }}
  verbs: [get, list, watch, create, patch]
{{- end -}}


{{/* The JSON:API's kinds, as RBAC resources. */}}
{{- define "catalio-operator.businessResources" -}}
[requirements, personas, usecases, testcases, testresults, components, processes, policies, capabilities, teams]
{{- end -}}
