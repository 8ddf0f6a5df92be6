{{/*
Names. Object names are DNS-1123 labels of at most 63 characters (Services and label values allow
no more); a suffixed name cuts its prefix instead of its suffix, so that two names never collide.
*/}}
{{- define "darkbloom.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "darkbloom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "darkbloom.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* `<fullname>-<suffix>` in at most 63 characters: (list . "operator"). */}}
{{- define "darkbloom.suffixed" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $prefix := include "darkbloom.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{- define "darkbloom.operator.fullname" -}}
{{- include "darkbloom.suffixed" (list . "operator") }}
{{- end }}

{{- define "darkbloom.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- .Values.operator.serviceAccount.name | default (include "darkbloom.operator.fullname" .) }}
{{- else }}
{{- required "operator.serviceAccount.name: name your ServiceAccount when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Coordinator's name: it names the operator's Service, Deployment and budget (DNS-1035). */}}
{{- define "darkbloom.coordinator.name" -}}
{{- $name := .Values.coordinator.name | default (include "darkbloom.fullname" .) }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "coordinator.name: %q cannot name a Coordinator (a DNS-1035 label: lowercase letters, digits and '-', starting with a letter); set coordinator.name" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
The database Secret: yours (existingSecret), or `<fullname>-database` (the chart's, from url; or
yours by that name when neither is given).
*/}}
{{- define "darkbloom.coordinator.databaseSecretName" -}}
{{- $db := .Values.coordinator.database }}
{{- if and $db.url $db.existingSecret.name }}
{{- fail "coordinator.database: set either coordinator.database.url or coordinator.database.existingSecret.name, not both" }}
{{- end }}
{{- $db.existingSecret.name | default (include "darkbloom.suffixed" (list . "database")) }}
{{- end }}

{{- define "darkbloom.coordinator.databaseSecretKey" -}}
{{- if .Values.coordinator.database.url }}url{{ else }}{{ .Values.coordinator.database.existingSecret.key }}{{ end }}
{{- end }}

{{- define "darkbloom.coordinator.adminKeySecretName" -}}
{{- .Values.coordinator.adminKey.existingSecret.name | default (include "darkbloom.suffixed" (list . "admin-key")) }}
{{- end }}

{{- define "darkbloom.coordinator.adminKeySecretKey" -}}
{{- if .Values.coordinator.adminKey.existingSecret.name }}{{ .Values.coordinator.adminKey.existingSecret.key }}{{ else }}admin-key{{ end }}
{{- end }}

{{/*
Helm creates a Coordinator only once its CRD is served: it maps every object of a release before
creating any, so a first install that also brings the CRD cannot hold the Coordinator. `helm
template` users pass --api-versions darkbloom.dev/v1alpha1/Coordinator.
*/}}
{{- define "darkbloom.coordinator.served" -}}
{{- if .Capabilities.APIVersions.Has "darkbloom.dev/v1alpha1/Coordinator" }}true{{ end }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "darkbloom.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "darkbloom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: darkbloom
{{- end }}

{{/* What selects the operator's pods (stable across upgrades: a Deployment's selector is immutable). */}}
{{- define "darkbloom.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "darkbloom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "darkbloom.operator.labels" -}}
{{ include "darkbloom.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
What selects the coordinator's serving pods: the labels the operator gives them
(operator/src/controllers/coordinator/resources/labels.ts; the migration Job's pods differ in
component).
*/}}
{{- define "darkbloom.coordinator.selectorLabels" -}}
app.kubernetes.io/name: darkbloom-coordinator
app.kubernetes.io/instance: {{ include "darkbloom.coordinator.name" . }}
app.kubernetes.io/component: coordinator
{{- end }}

{{- define "darkbloom.coordinator.labels" -}}
{{ include "darkbloom.labels" . }}
app.kubernetes.io/component: coordinator
{{- end }}

{{- define "darkbloom.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (.Values.operator.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "darkbloom.coordinator.image" -}}
{{- printf "%s:%s" .Values.coordinator.image.repository (.Values.coordinator.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- /* The ConfigMap the chart makes from coordinator.tpm.ekCaPem. */}}
{{- define "darkbloom.coordinator.tpmEkCaName" -}}
{{- include "darkbloom.suffixed" (list . "tpm-ek-ca") }}
{{- end }}
